"""Run PyPy 3.9's own test_asyncio mixins against uvcffi, as tests/cpython/ does for CPython
3.11's (the shared machinery is tests/_stdlib_asyncio.py).

Debian's pypy3 ships its test package separately: `pypy3-lib-testsuite` (tools/setup.sh
installs it).  Each test module here first calls skip_unless_pypy_39() (on any other runtime
the module is skipped as a whole, naming why), then subclasses a stdlib mixin with a factory
returning a uvcffi loop, keeps the tests of one area (by name), and skips what it must with a
reason that names it.
"""
from _stdlib_asyncio import (  # noqa: F401  (re-exported to the test modules)
    PopenFailureLeavesNoFd,
    UvcffiPolicy,
    UvcffiPolicyMixin,
    bind_suite,
    bound_test_utils,
    mark_tests,
    skip_module_unless_bound,
    uvcffi_case,
    uvcffi_policy,
    uvcffi_policy_installed,
)

# The stdlib's test_asyncio.utils on PyPy 3.9 with its test package, else None.
test_utils = bound_test_utils("pypy", (3, 9))


def skip_unless_pypy_39():
    """Skips the calling module unless this is PyPy 3.9 with test.test_asyncio installed:
    other versions' test_asyncio differ (tests/cpython/ binds CPython 3.11's)."""
    skip_module_unless_bound(
        "pypy", (3, 9), package_hint="Debian: pypy3-lib-testsuite",
        elsewhere="tests/cpython/ binds CPython 3.11's",
    )
