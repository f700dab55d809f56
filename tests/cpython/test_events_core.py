"""test_events' loop-core tests (scheduling, readers/writers, signals, executor) on uvcffi."""
from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

CORE = (
    "test_run_until_complete", "test_call_later", "test_call_soon", "test_run_in_executor",
    "test_reader_callback", "test_writer_callback", "test_add_signal_handler",
    "test_signal_handling", "test_internal_fds", "test_prompt_cancellation",
    "test_timeout_rounding", "test_remove_fds_after_closing", "test_add_fds_after_closing",
    "test_close_running_event_loop", "test_close",
)

if test_utils is not None:
    from test.test_asyncio import test_events

    UvcffiEventLoopCoreTests = uvcffi_case(
        "UvcffiEventLoopCoreTests",
        (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
        keep=lambda name: name.startswith(CORE),
        skips={
            "test_internal_fds": "reads BaseSelectorEventLoop privates (_internal_fds, _csock, "
            "_ssock)",
            "test_timeout_rounding": "its assertion message reads loop._clock_resolution and "
            "loop._selector (tests/test_loop_core.py::test_timeout_rounding checks the behaviour)",
            "test_prompt_cancellation": "ends with loop._stop_serving(sock), a "
            "BaseSelectorEventLoop private (its assertions pass; "
            "tests/test_sockets.py::test_prompt_cancellation is the same test)",
        },
        module=__name__,
    )
