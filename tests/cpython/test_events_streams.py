"""test_events' stream parts (TCP and Unix connections, servers, accepted sockets) on uvcffi."""
from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

STREAMS = (
    "test_create_connection", "test_create_unix_", "test_connect_accepted_socket",
    "test_create_server", "test_server_close",
)

if test_utils is not None:
    from test.test_asyncio import test_events

    UvcffiEventLoopStreamTests = uvcffi_case(
        "UvcffiEventLoopStreamTests",
        (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
        keep=lambda name: name.startswith(STREAMS),
        skips={
            "test_create_server_multiple_hosts_ipv4": "patches asyncio.base_events.socket and "
            "loop._start_serving (asyncio's own loop internals)",
            "test_create_server_multiple_hosts_ipv6": "patches asyncio.base_events.socket and "
            "loop._start_serving (asyncio's own loop internals)",
        },
        module=__name__,
    )
