"""Run a Python's own test.test_asyncio against uvcffi: what tests/cpython/ (CPython 3.11's
suite) and tests/pypy/ (PyPy 3.9's) share.

Each binding module subclasses a stdlib mixin with a factory returning a uvcffi loop, keeps
the tests of one area (by name), and skips what it must with a reason that names it.  A
binding package binds the stdlib only on the runtime it is written for (`bound_test_utils`):
other versions' test_asyncio differ, even in file names.
"""
import asyncio
import contextlib
import importlib
import os
import sys
import unittest
import warnings

import pytest

import uvcffi

try:
    from test.test_asyncio import utils as stdlib_test_utils
except ImportError:  # a Python without its test package (Debian's pypy3 needs pypy3-lib-testsuite)
    stdlib_test_utils = None


def runs_on(implementation, version):
    """True when this is the runtime ``implementation`` ("cpython", "pypy") at ``version``."""
    return sys.implementation.name == implementation and sys.version_info[:2] == version


def bound_test_utils(implementation, version):
    """The stdlib's test_asyncio.utils when this is the runtime a binding package is written
    for and it ships its test package; else None (the package's modules then bind nothing)."""
    return stdlib_test_utils if runs_on(implementation, version) else None


def _no_stdlib_tests(package_hint):
    reason = "this Python does not ship test.test_asyncio"
    return f"{reason} ({package_hint})" if package_hint else reason


def requires_stdlib_tests(package_hint=None):
    return pytest.mark.skipif(stdlib_test_utils is None, reason=_no_stdlib_tests(package_hint))


def requires_runtime(implementation, version, reason):
    return pytest.mark.skipif(not runs_on(implementation, version), reason=reason)


def skip_module_unless_bound(implementation, version, *, package_hint=None, elsewhere=None):
    """Skip the calling test module as a whole, naming why, unless this is the runtime
    ``implementation`` ``version`` and it ships its test.test_asyncio."""
    if not runs_on(implementation, version):
        names = {"cpython": "CPython", "pypy": "PyPy"}
        here = sys.implementation.name
        reason = (f"these tests bind {names.get(implementation, implementation)} "
                  f"{version[0]}.{version[1]}'s test.test_asyncio; this runtime is "
                  f"{names.get(here, here)} {sys.version_info[0]}.{sys.version_info[1]}")
        if elsewhere:
            reason += f" ({elsewhere})"
        pytest.skip(reason, allow_module_level=True)
    if stdlib_test_utils is None:
        pytest.skip(_no_stdlib_tests(package_hint), allow_module_level=True)


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


def mark_tests(cls, skips=None, xfails=None):
    """Skip (``skips``) or strictly expect to fail (``xfails``) tests of ``cls`` by name, each
    with its reason; a name ``cls`` does not have is an error (the stdlib renamed a test)."""
    for marks, decorate in ((skips, unittest.skip), (xfails, _xfail_strict)):
        for attr, reason in (marks or {}).items():
            if not callable(getattr(cls, attr, None)):
                raise AssertionError(f"{cls.__name__}: no test {attr}")
            setattr(cls, attr, decorate(reason)(getattr(cls, attr)))
    return cls


def _xfail_strict(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


def uvcffi_case(name, bases, *, factory="create_event_loop", keep=None, skips=None,
                xfails=None, module=None):
    """A TestCase class from stdlib ``bases`` whose ``factory`` method returns uvcffi loops.

    ``keep(test_name)`` selects the tests of this area (the others are not collected);
    ``skips`` maps a test name to the reason it is skipped, ``xfails`` to the reason it is
    expected to fail (strictly: it is reported when it starts passing).
    """
    ns = {factory: lambda self: uvcffi.new_event_loop(), "__module__": module or __name__}
    cls = type(name, tuple(bases), ns)
    if keep is not None:
        for attr in dir(cls):
            if attr.startswith("test_") and not keep(attr):
                setattr(cls, attr, None)  # not callable: unittest and pytest skip collecting it
    return mark_tests(cls, skips, xfails)


def bind_suite(namespace, module_name):
    """Each TestCase class the stdlib module ``test.test_asyncio.<module_name>`` defines, as a
    class ``Uvcffi<Suite>_<Class>`` of the module whose globals are ``namespace``."""
    module = importlib.import_module("test.test_asyncio." + module_name)
    short = module_name[len("test_"):].title().replace("_", "")
    for name, cls in sorted(vars(module).items()):
        if (isinstance(cls, type) and issubclass(cls, unittest.TestCase)
                and cls.__module__ == module.__name__
                and unittest.defaultTestLoader.getTestCaseNames(cls)):
            bound = f"Uvcffi{short}_{name}"
            namespace[bound] = type(bound, (cls,), {"__module__": namespace["__name__"]})


class PopenFailureLeavesNoFd:
    """For test_subprocess' SubprocessMixin: its two tests that make subprocess.Popen fail
    also check that the failed start leaves no pipe end behind."""

    async def _test_popen_error(self, stdin):
        fds_before = sorted(os.listdir("/proc/self/fd"))
        await super()._test_popen_error(stdin)  # raises ZeroDivisionError from Popen
        self.assertEqual(sorted(os.listdir("/proc/self/fd")), fds_before)
