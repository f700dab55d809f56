"""PyPy 3.9's test_sock_lowlevel (the sock_* methods, getaddrinfo) on uvcffi."""
from ._harness import skip_unless_pypy_39, test_utils, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_sock_lowlevel  # noqa: E402

UvcffiSockTests = uvcffi_case(
    "UvcffiSockTests",
    (test_sock_lowlevel.BaseSockTestsMixin, test_utils.TestCase),
    module=__name__,
)
