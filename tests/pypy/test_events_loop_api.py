"""test_events' tests of the loop-level API outside the EventLoopTestsMixin, each with its
loop from asyncio.new_event_loop() (a policy returning uvcffi loops is installed around
them): get_event_loop()/get_running_loop() from inside a running loop (asyncio's Python
implementations of them, bound to the loop through events._set_running_loop), a
ProcessPoolExecutor under run_in_executor, and Server.get_loop()."""
from ._harness import UvcffiPolicyMixin, skip_unless_pypy_39

skip_unless_pypy_39()

from test.test_asyncio import test_events  # noqa: E402


class UvcffiPyGetEventLoopTests(UvcffiPolicyMixin, test_events.TestPyGetEventLoop):
    pass


class UvcffiServerTests(UvcffiPolicyMixin, test_events.TestServer):
    pass
