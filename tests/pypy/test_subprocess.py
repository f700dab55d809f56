"""PyPy 3.9's test_asyncio.test_subprocess on uvcffi loops.

SubprocessWatcherMixin takes its loop from the event loop policy and attaches a child
watcher to it; uvcffi does not use child watchers (libuv and a pidfd reap its children), so
each watcher flavour checks that uvcffi's children survive that watcher being there.  The
stdlib skips its MultiLoopChildWatcher class in 3.9 (bpo-38323); so does this module.

The two tests that make the start fail by patching subprocess.Popen run once on each of
uvcffi's start paths (uv_spawn, and Popen for what uv_spawn cannot express).
"""
from ._harness import StartFailsOnBothPaths, UvcffiPolicyMixin, skip_unless_pypy_39, test_utils

skip_unless_pypy_39()

from asyncio import unix_events  # noqa: E402

from test.test_asyncio import test_subprocess  # noqa: E402


def _case(name, watcher):
    return type(
        name,
        (StartFailsOnBothPaths, UvcffiPolicyMixin, test_subprocess.SubprocessWatcherMixin,
         test_utils.TestCase),
        {"Watcher": watcher, "__module__": __name__},
    )


UvcffiSubprocessThreadedWatcherTests = _case(
    "UvcffiSubprocessThreadedWatcherTests", unix_events.ThreadedChildWatcher
)
UvcffiSubprocessSafeWatcherTests = _case(
    "UvcffiSubprocessSafeWatcherTests", unix_events.SafeChildWatcher
)
UvcffiSubprocessFastWatcherTests = _case(
    "UvcffiSubprocessFastWatcherTests", unix_events.FastChildWatcher
)
UvcffiSubprocessPidfdWatcherTests = _case(
    "UvcffiSubprocessPidfdWatcherTests", unix_events.PidfdChildWatcher
)
