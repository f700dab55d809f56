"""test_server (start_server / start_unix_server, serve_forever, Server) on uvcffi."""
from ._harness import skip_unless_pypy_39, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_server  # noqa: E402

UvcffiStartServerTests = uvcffi_case(
    "UvcffiStartServerTests",
    (test_server.SelectorStartServerTests,),
    factory="new_loop",
    module=__name__,
)
