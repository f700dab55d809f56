"""test_events' subprocess_* tests on uvcffi, with the SafeChildWatcher the mixin attaches
(it installs a SIGCHLD handler through loop.add_signal_handler, which uvcffi must survive)."""
from ._harness import skip_unless_pypy_39, test_utils, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_events  # noqa: E402

UvcffiEventLoopSubprocessTests = uvcffi_case(
    "UvcffiEventLoopSubprocessTests",
    (test_events.UnixEventLoopTestsMixin, test_events.SubprocessTestsMixin, test_utils.TestCase),
    keep=lambda name: name.startswith("test_subprocess_"),
    module=__name__,
)
