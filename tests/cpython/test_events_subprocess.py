"""test_events' subprocess_* tests on uvcffi, with the SafeChildWatcher the mixin attaches
(it installs a SIGCHLD handler through loop.add_signal_handler, which uvcffi must survive)."""
from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

if test_utils is not None:
    from test.test_asyncio import test_events

    UvcffiEventLoopSubprocessTests = uvcffi_case(
        "UvcffiEventLoopSubprocessTests",
        (test_events.UnixEventLoopTestsMixin, test_events.SubprocessTestsMixin,
         test_utils.TestCase),
        keep=lambda name: name.startswith("test_subprocess_"),
        module=__name__,
    )
