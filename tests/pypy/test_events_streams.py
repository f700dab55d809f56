"""test_events' stream parts (TCP and Unix connections, servers, accepted sockets, and their
TLS variants: PyPy 3.9 has no test_asyncio.test_ssl) on uvcffi."""
from ._harness import skip_unless_pypy_39, test_utils, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_events  # noqa: E402

STREAMS = (
    "test_create_connection", "test_create_unix_", "test_connect_accepted_socket",
    "test_create_server", "test_server_close",
    "test_create_ssl_", "test_ssl_connect_accepted_socket",
)

# test_create_ssl_unix_connection asserts get_extra_info('sockname') on the TLS transport once
# create_unix_connection() has returned; 3.9's sslproto answers None for it once
# connection_lost() has run.  The test's server thread answers the request the client sends
# from connection_made() and closes; on PyPy it often takes the GIL from the loop thread
# during that write and has answered and closed before the loop polls again.  asyncio's
# selector transport reads once per iteration (reply, then EOF in the next one), so its
# run_until_complete() returns before connection_lost(); uvcffi, as libuv (and uvloop), reads
# the reply and the EOF in one iteration and runs connection_lost() in the next, the one
# that stops the loop.  About one run in three fails so (also on CPython 3.11, whose
# tests/cpython/ leaves test_events' TLS tests out); the TCP variant never did in 200 runs.
_RACES_SERVER_CLOSE = (
    "races the test server's close: passes with asyncio's loop only because its selector "
    "transport reads the reply and the EOF in two iterations (uvcffi reads both in one), so "
    "get_extra_info('sockname') can come after connection_lost(), when 3.9's sslproto answers "
    "None; see the comment above"
)

_PATCHES_SERVING = ("patches asyncio.base_events.socket and loop._start_serving (asyncio's own "
                    "loop internals)")

UvcffiEventLoopStreamTests = uvcffi_case(
    "UvcffiEventLoopStreamTests",
    (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
    keep=lambda name: name.startswith(STREAMS),
    skips={
        "test_create_server_multiple_hosts_ipv4": _PATCHES_SERVING,
        "test_create_server_multiple_hosts_ipv6": _PATCHES_SERVING,
        "test_create_ssl_unix_connection": _RACES_SERVER_CLOSE,
    },
    module=__name__,
)
