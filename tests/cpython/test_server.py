"""test_server (start_server / start_unix_server, serve_forever, Server) on uvcffi."""

from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

if test_utils is not None:
    from test.test_asyncio import test_server

    UvcffiStartServerTests = uvcffi_case(
        "UvcffiStartServerTests",
        (test_server.SelectorStartServerTests,),
        factory="new_loop",
        module=__name__,
    )
