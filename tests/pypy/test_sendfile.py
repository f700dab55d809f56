"""test_sendfile (loop.sendfile over transports, loop.sock_sendfile) on uvcffi."""
from ._harness import skip_unless_pypy_39, test_utils, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_sendfile  # noqa: E402

UvcffiSendfileTests = uvcffi_case(
    "UvcffiSendfileTests",
    (test_sendfile.SendfileTestsBase, test_utils.TestCase),
    module=__name__,
)
