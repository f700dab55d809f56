"""test_streams (StreamReader/StreamWriter, open_connection, start_server ...) on uvcffi.

These tests make their loop with asyncio.new_event_loop(): a policy returning uvcffi loops
is installed around each of them."""
from ._harness import skip_unless_pypy_39, uvcffi_case, uvcffi_policy_installed

skip_unless_pypy_39()

from test.test_asyncio import test_streams  # noqa: E402

# uvcffi_policy_installed (imported above) is an autouse fixture: asyncio.new_event_loop()
# gives uvcffi loops in these tests.
__all__ = ["uvcffi_policy_installed"]

UvcffiStreamTests = uvcffi_case(
    "UvcffiStreamTests",
    (test_streams.StreamTests,),
    factory="_unused_factory",
    module=__name__,
)
