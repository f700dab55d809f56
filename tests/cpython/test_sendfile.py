"""test_sendfile (loop.sendfile over transports, loop.sock_sendfile) on uvcffi."""
from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

if test_utils is not None:
    from test.test_asyncio import test_sendfile

    UvcffiSendfileTests = uvcffi_case(
        "UvcffiSendfileTests",
        (test_sendfile.SendfileTestsBase, test_utils.TestCase),
        module=__name__,
    )
