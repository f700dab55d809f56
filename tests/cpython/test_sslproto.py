"""test_sslproto on uvcffi: BaseStartTLS (start_tls, TLS over create_connection) with
new_loop() returning a uvcffi loop, as the stdlib binds it for its selector loop; and
SslProtoHandshakeTests, which build asyncio.sslproto.SSLProtocol by hand on a loop from
asyncio.new_event_loop() (a policy returning uvcffi loops is installed around them)."""
import asyncio
import unittest
import warnings

import pytest

from ._harness import (UvcffiPolicy, requires_cpython_311, requires_stdlib_tests, test_utils,
                       uvcffi_case)

pytestmark = [requires_stdlib_tests, requires_cpython_311]


@pytest.fixture(autouse=True)
def _uvcffi_policy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(UvcffiPolicy())
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(old)


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
