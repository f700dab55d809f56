"""Run CPython 3.11's own test_asyncio mixins against uvcffi (the shared machinery is
tests/_stdlib_asyncio.py; tests/pypy/ binds PyPy 3.9's suite the same way).

Each test module here subclasses a stdlib mixin with a factory returning a uvcffi loop,
keeps the tests of one area (by name), and skips what it must with a reason that names it.
"""
from _stdlib_asyncio import (  # noqa: F401  (re-exported to the test modules)
    PopenFailureLeavesNoFd,
    UvcffiPolicy,
    UvcffiPolicyMixin,
    bind_suite,
    bound_test_utils,
    mark_tests,
    requires_runtime,
    uvcffi_case,
    uvcffi_policy,
    uvcffi_policy_installed,
)
from _stdlib_asyncio import requires_stdlib_tests as _requires_stdlib_tests

# The modules here import and bind the stdlib mixins only when test_utils is set: on the
# Python they are written for (other versions' test_asyncio differ, even in file names).
test_utils = bound_test_utils("cpython", (3, 11))

requires_stdlib_tests = _requires_stdlib_tests()
requires_cpython_311 = requires_runtime(
    "cpython", (3, 11),
    reason="the stdlib test_asyncio mixins are bound for CPython 3.11 (the machine's Python)",
)
