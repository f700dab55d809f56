"""CPython's test_asyncio.test_subprocess on uvcffi loops.

SubprocessWatcherMixin takes its loop from the event loop policy and attaches a child
watcher to it; uvcffi does not use child watchers (libuv and a pidfd reap its children), so
each watcher flavour checks that uvcffi's children survive that watcher being there.

uvcffi starts a child with uv_spawn, or with subprocess.Popen when uv_spawn cannot honour an
option (close_fds with inheritable fds open, preexec_fn, ...), so which one a given test takes
depends on the test process. The two tests that make the start fail by patching
subprocess.Popen therefore run once on each path, the failure injected into that path's call.
"""

from ._harness import (
    StartFailsOnBothPaths,
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
