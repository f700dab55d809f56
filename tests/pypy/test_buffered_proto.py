"""test_buffered_proto (BufferedProtocol over stream transports) on uvcffi."""
import unittest

from ._harness import skip_unless_pypy_39, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_buffered_proto  # noqa: E402

UvcffiBufferedProtocolTests = uvcffi_case(
    "UvcffiBufferedProtocolTests",
    (test_buffered_proto.BaseTestBufferedProtocol, unittest.TestCase),
    factory="new_loop",
    module=__name__,
)
