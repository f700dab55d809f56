"""Run CPython's own test_asyncio mixins against uvcffi.

Each test module here subclasses a stdlib mixin with a factory returning a uvcffi loop,
keeps the tests of one area (by name), and skips what it must with a reason that names it.
"""
import asyncio
import contextlib
import sys
import unittest
import warnings

import pytest

import uvcffi

try:
    from test.test_asyncio import utils as _stdlib_test_utils
except ImportError:  # a Python without its test package
    _stdlib_test_utils = None

_BOUND_PYTHON = sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
# The modules here import and bind the stdlib mixins only when test_utils is set: on the
# Python they are written for (other versions' test_asyncio differ, even in file names).
test_utils = _stdlib_test_utils if _BOUND_PYTHON else None

requires_stdlib_tests = pytest.mark.skipif(
    _stdlib_test_utils is None, reason="this Python does not ship test.test_asyncio"
)
requires_cpython_311 = pytest.mark.skipif(
    not _BOUND_PYTHON,
    reason="the stdlib test_asyncio mixins are bound for CPython 3.11 (the machine's Python)",
)


class UvcffiPolicy(asyncio.DefaultEventLoopPolicy):
    """For the tests that make their loop with asyncio.new_event_loop()."""

    def new_event_loop(self):
        return uvcffi.new_event_loop()


@contextlib.contextmanager
def uvcffi_policy():
    """asyncio.new_event_loop() makes uvcffi loops inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies, Python 3.14+
        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(UvcffiPolicy())
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(old)


@pytest.fixture(autouse=True)
def uvcffi_policy_installed():
    """Imported into a test module, runs each of its tests under uvcffi_policy()."""
    with uvcffi_policy():
        yield


class UvcffiPolicyMixin:
    """For unittest classes: their setUp and tearDown run under uvcffi_policy()."""

    def setUp(self):
        self._uvcffi_policy = uvcffi_policy()
        self._uvcffi_policy.__enter__()
        super().setUp()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self._uvcffi_policy.__exit__(None, None, None)


def uvcffi_case(name, bases, *, factory="create_event_loop", keep=None, skips=None, module=None):
    """A TestCase class from stdlib ``bases`` whose ``factory`` method returns uvcffi loops.

    ``keep(test_name)`` selects the tests of this area (the others are not collected);
    ``skips`` maps a test name to the reason it is skipped.
    """
    skips = dict(skips or {})
    ns = {factory: lambda self: uvcffi.new_event_loop(), "__module__": module or __name__}
    cls = type(name, tuple(bases), ns)
    for attr in dir(cls):
        if not attr.startswith("test_"):
            continue
        if keep is not None and not keep(attr):
            setattr(cls, attr, None)  # not callable: unittest and pytest skip collecting it
        elif attr in skips:
            setattr(cls, attr, unittest.skip(skips.pop(attr))(getattr(cls, attr)))
    if skips:
        raise AssertionError(f"{name}: skips name unknown tests {sorted(skips)}")
    return cls
