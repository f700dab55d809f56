"""PyPy 3.9's test_asyncio.test_subprocess on uvcffi loops.

SubprocessWatcherMixin takes its loop from the event loop policy and attaches a child
watcher to it; uvcffi does not use child watchers (a pidfd watched by libuv reports its
children's exits), so each watcher flavour checks that uvcffi's children survive that watcher
being there.  The stdlib skips its MultiLoopChildWatcher class in 3.9 (bpo-38323); so does
this module.
"""
from ._harness import PopenFailureLeavesNoFd, UvcffiPolicyMixin, skip_unless_pypy_39, test_utils

skip_unless_pypy_39()

from asyncio import unix_events  # noqa: E402

from test.test_asyncio import test_subprocess  # noqa: E402


def _case(name, watcher):
    return type(
        name,
        (PopenFailureLeavesNoFd, UvcffiPolicyMixin, test_subprocess.SubprocessWatcherMixin,
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
