"""test_sslproto on uvcffi: BaseStartTLS (start_tls, TLS over create_connection) with
new_loop() returning a uvcffi loop, as the stdlib binds it for its selector loop; and
SslProtoHandshakeTests, which build asyncio.sslproto.SSLProtocol by hand on a loop from
asyncio.new_event_loop() (a policy returning uvcffi loops is installed around them)."""
import unittest

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
    from test.test_asyncio import test_sslproto

    UvcffiStartTLSTests = uvcffi_case(
        "UvcffiStartTLSTests",
        (test_sslproto.BaseStartTLS, unittest.TestCase),
        factory="new_loop",
        module=__name__,
    )

    UvcffiSslProtoHandshakeTests = uvcffi_case(
        "UvcffiSslProtoHandshakeTests",
        (test_sslproto.SslProtoHandshakeTests,),
        factory="_unused_factory",
        module=__name__,
    )
