"""test_sslproto on uvcffi: BaseStartTLS (start_tls, TLS over create_connection) with
new_loop() returning a uvcffi loop, as the stdlib binds it for its selector loop; and
SslProtoHandshakeTests, which build asyncio.sslproto.SSLProtocol by hand on a loop from
asyncio.new_event_loop() (a policy returning uvcffi loops is installed around them)."""
import unittest

from ._harness import skip_unless_pypy_39, uvcffi_case, uvcffi_policy_installed

skip_unless_pypy_39()

from test.test_asyncio import test_sslproto  # noqa: E402

# uvcffi_policy_installed (imported above) is an autouse fixture: asyncio.new_event_loop()
# gives uvcffi loops in these tests.
__all__ = ["uvcffi_policy_installed"]

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
