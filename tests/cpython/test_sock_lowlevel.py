"""CPython's test_sock_lowlevel (the sock_* methods, getaddrinfo) on uvcffi."""
from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

if test_utils is not None:
    from test.test_asyncio import test_sock_lowlevel

    UvcffiSockTests = uvcffi_case(
        "UvcffiSockTests",
        (test_sock_lowlevel.BaseSockTestsMixin, test_utils.TestCase),
        module=__name__,
    )
