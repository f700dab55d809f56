"""CPython's test_asyncio.test_subprocess on uvcffi loops.

SubprocessWatcherMixin takes its loop from the event loop policy and attaches a child
watcher to it; uvcffi does not use child watchers (a pidfd watched by libuv reports its
children's exits), so each watcher flavour checks that uvcffi's children survive that watcher
being there.
"""

from ._harness import (
    PopenFailureLeavesNoFd,
    UvcffiPolicyMixin,
    requires_cpython_311,
    requires_stdlib_tests,
    test_utils,
)

pytestmark = [requires_stdlib_tests, requires_cpython_311]

if test_utils is not None:
    from asyncio import unix_events

    from test.test_asyncio import test_subprocess

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
