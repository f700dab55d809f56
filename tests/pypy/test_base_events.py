"""test_base_events' tests that run a loop from asyncio.new_event_loop() (a policy returning
uvcffi loops is installed around them): a loop refuses to run inside another running loop,
and create_task(name=) names the task with and without a task factory.

The rest of test_base_events drives asyncio.BaseEventLoop itself (mocked selectors and
privates); its create_datagram_endpoint tests are bound in test_events_datagram.py.
"""
from ._harness import UvcffiPolicyMixin, skip_unless_pypy_39, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_base_events  # noqa: E402

UvcffiRunningLoopTests = uvcffi_case(
    "UvcffiRunningLoopTests",
    (UvcffiPolicyMixin, test_base_events.RunningLoopTests),
    factory="_unused_factory",
    module=__name__,
)

UvcffiNamedTaskTests = uvcffi_case(
    "UvcffiNamedTaskTests",
    (UvcffiPolicyMixin, test_base_events.BaseEventLoopTests),
    factory="_unused_factory",
    keep=lambda name: name.startswith("test_create_named_task_with_"),
    module=__name__,
)
