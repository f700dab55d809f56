"""test_events' pipe and pty tests on uvcffi (connect_read_pipe / connect_write_pipe)."""
from ._harness import skip_unless_pypy_39, test_utils, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_events  # noqa: E402

PIPES = (
    "test_read_pipe", "test_unclosed_pipe_transport", "test_read_pty_output",
    "test_write_pipe", "test_write_pty", "test_bidirectional_pty",
)

UvcffiEventLoopPipeTests = uvcffi_case(
    "UvcffiEventLoopPipeTests",
    (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
    keep=lambda name: name.startswith(PIPES),
    module=__name__,
)
