"""CPython's test_asyncio.test_subprocess on uvcffi loops.

SubprocessWatcherMixin takes its loop from the event loop policy and attaches a child
watcher to it; uvcffi does not use child watchers (libuv and a pidfd reap its children), so
each watcher flavour checks that uvcffi's children survive that watcher being there.

uvcffi starts a child with uv_spawn, or with subprocess.Popen when uv_spawn cannot honour an
option (close_fds with inheritable fds open, preexec_fn, ...), so which one a given test takes
depends on the test process. The two tests that make the start fail by patching
subprocess.Popen therefore run once on each path, the failure injected into that path's call.
"""

import os
from unittest import mock

from ._harness import UvcffiPolicyMixin, requires_cpython_311, requires_stdlib_tests, test_utils

pytestmark = [requires_stdlib_tests, requires_cpython_311]

if test_utils is not None:
    from asyncio import unix_events
    from test.test_asyncio import test_subprocess

    from uvcffi.transports import subprocess as uvc_subprocess

    class _StartFailsOnBothPaths:
        async def _test_popen_error(self, stdin):
            start_failure = super()._test_popen_error  # raises ZeroDivisionError from Popen
            transport = uvc_subprocess.SubprocessTransport
            fds_before = sorted(os.listdir("/proc/self/fd"))
            with mock.patch.object(transport, "_can_spawn", return_value=False):
                await start_failure(stdin)
            with mock.patch.object(transport, "_can_spawn", return_value=True), \
                    mock.patch.object(uvc_subprocess, "_uv_spawn", side_effect=ZeroDivisionError):
                await start_failure(stdin)
            # Neither path leaves a pipe end behind.
            self.assertEqual(sorted(os.listdir("/proc/self/fd")), fds_before)

    def _case(name, watcher):
        return type(
            name,
            (_StartFailsOnBothPaths, UvcffiPolicyMixin, test_subprocess.SubprocessWatcherMixin,
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
