"""test_buffered_proto (BufferedProtocol over stream transports) on uvcffi."""
import unittest

from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

if test_utils is not None:
    from test.test_asyncio import test_buffered_proto

    UvcffiBufferedProtocolTests = uvcffi_case(
        "UvcffiBufferedProtocolTests",
        (test_buffered_proto.BaseTestBufferedProtocol, unittest.TestCase),
        factory="new_loop",
        module=__name__,
    )
