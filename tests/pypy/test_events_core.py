"""test_events' loop-core tests (scheduling, readers/writers, signals, executor) on uvcffi.

test_internal_fds skips itself on any loop that is not a BaseSelectorEventLoop."""
from ._harness import skip_unless_pypy_39, test_utils, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_events  # noqa: E402

CORE = (
    "test_run_until_complete", "test_call_later", "test_call_soon", "test_run_in_executor",
    "test_reader_callback", "test_writer_callback", "test_add_signal_handler",
    "test_signal_handling", "test_internal_fds", "test_prompt_cancellation",
    "test_timeout_rounding", "test_remove_fds_after_closing", "test_add_fds_after_closing",
    "test_close_running_event_loop", "test_close",
)

UvcffiEventLoopCoreTests = uvcffi_case(
    "UvcffiEventLoopCoreTests",
    (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
    keep=lambda name: name.startswith(CORE),
    skips={
        "test_timeout_rounding": "its assertion message reads loop._clock_resolution and "
        "loop._selector (tests/test_loop_core.py::test_timeout_rounding checks the behaviour)",
        "test_prompt_cancellation": "ends with loop._stop_serving(sock), a BaseSelectorEventLoop "
        "private (its assertions pass; tests/test_sockets.py::test_prompt_cancellation is the "
        "same test)",
    },
    module=__name__,
)
