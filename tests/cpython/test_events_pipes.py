"""test_events' pipe and pty tests on uvcffi (connect_read_pipe / connect_write_pipe)."""
from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

PIPES = (
    "test_read_pipe", "test_unclosed_pipe_transport", "test_read_pty_output",
    "test_write_pipe", "test_write_pty", "test_bidirectional_pty",
)

if test_utils is not None:
    from test.test_asyncio import test_events

    UvcffiEventLoopPipeTests = uvcffi_case(
        "UvcffiEventLoopPipeTests",
        (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
        keep=lambda name: name.startswith(PIPES),
        module=__name__,
    )
