"""test_streams (StreamReader/StreamWriter, open_connection, start_server ...) on uvcffi.

These tests make their loop with asyncio.new_event_loop(): a policy returning uvcffi loops
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
    from test.test_asyncio import test_streams

    UvcffiStreamTests = uvcffi_case(
        "UvcffiStreamTests",
        (test_streams.StreamTests,),
        factory="_unused_factory",
        module=__name__,
    )
