"""CPython's test_asyncio suites for what runs on top of a loop (tasks, futures, locks,
queues, task groups, timeouts, wait_for, async generators, threads), each test under a
policy whose asyncio.new_event_loop() makes uvcffi loops.

These suites are the loop-independent half of asyncio: they pass on any loop that keeps
asyncio's scheduling contract (FIFO callbacks, timers that never fire early, cancellation,
exception-handler contexts, contextvars per callback), which is what they check here.
Tests that build asyncio's own TestLoop (a virtual clock) keep it: they check the library,
not the loop, and cost nothing.
"""
import asyncio

import uvcffi

from ._harness import (
    bind_suite,
    requires_cpython_311,
    requires_stdlib_tests,
    test_utils,
    uvcffi_policy_installed,
)

pytestmark = [requires_stdlib_tests, requires_cpython_311]

# uvcffi_policy_installed (imported above) is an autouse fixture: asyncio.new_event_loop()
# (and so asyncio.run, asyncio.Runner and IsolatedAsyncioTestCase) gives uvcffi loops.
__all__ = ["uvcffi_policy_installed"]

SUITES = (
    "test_tasks", "test_futures", "test_futures2", "test_locks", "test_queues",
    "test_taskgroups", "test_timeouts", "test_waitfor", "test_pep492", "test_context",
    "test_threads",
)


def test_the_policy_makes_uvcffi_loops():
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvcffi.Loop)
    finally:
        loop.close()


if test_utils is not None:
    for _suite in SUITES:
        bind_suite(globals(), _suite)

