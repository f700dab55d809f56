"""test_ssl (TLS over create_connection / create_server / start_tls / streams) on uvcffi.

The tests make their loop with asyncio.new_event_loop(): a policy returning uvcffi loops
is installed around each of them."""


from ._harness import (
    requires_cpython_311,
    requires_stdlib_tests,
    test_utils,
    uvcffi_case,
    uvcffi_policy_installed,
)

pytestmark = [requires_stdlib_tests, requires_cpython_311]

# uvcffi_policy_installed (imported above) is an autouse fixture: asyncio.new_event_loop()
# gives uvcffi loops in these tests.
__all__ = ["uvcffi_policy_installed"]


if test_utils is not None:
    from test.test_asyncio import test_ssl

    UvcffiTestSSL = uvcffi_case(
        "UvcffiTestSSL",
        (test_ssl.TestSSL,),
        factory="_unused_factory",
        skips={
            # uvcffi's TLS is its own transport (transports/tls.py), not asyncio.sslproto:
            # these reach into asyncio's SSLProtocol.  tests/test_tls_behaviour.py covers
            # both behaviours (test_flush_before_shutdown, test_trailing_data_at_shutdown).
            "test_flush_before_shutdown": "reads writer.transport._ssl_protocol (asyncio's "
            "SSLProtocol) to call its pause_writing()/resume_writing()",
            "test_remote_shutdown_receives_trailing_data": "calls "
            "writer.transport._test__append_write_backlog (asyncio's SSLProtocol backlog)",
        },
        module=__name__,
    )
