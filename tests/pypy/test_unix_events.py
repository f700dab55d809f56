"""test_unix_events' loop-level tests (Unix sockets, sock_sendfile, add_reader checks) on uvcffi.

SelectorEventLoopUnixSocketTests builds its loop as asyncio.SelectorEventLoop() in setUp:
the subclass here builds a uvcffi loop instead.  The other two classes make theirs with
asyncio.new_event_loop(), which a uvcffi policy answers while they run.  The rest of
test_unix_events drives asyncio's own classes (its signal handling on a mocked selector loop,
its pipe transports, child watchers) with mocks.
"""
from ._harness import UvcffiPolicyMixin, mark_tests, skip_unless_pypy_39, test_utils

skip_unless_pypy_39()

from test.test_asyncio import test_unix_events as tue  # noqa: E402

import uvcffi  # noqa: E402


class UvcffiUnixSocketTests(tue.SelectorEventLoopUnixSocketTests):
    def setUp(self):
        test_utils.TestCase.setUp(self)
        self.loop = uvcffi.new_event_loop()
        self.set_event_loop(self.loop)


mark_tests(UvcffiUnixSocketTests, skips={
    "test_create_unix_server_bind_error": "patches asyncio.unix_events.socket (the module "
    "reference of asyncio's own loop); tests/test_server.py checks the socket is closed",
})


class UvcffiUnixSockSendfileTests(UvcffiPolicyMixin, tue.SelectorEventLoopUnixSockSendfileTests):
    pass


_PRIVATE_SENDFILE = ("drives loop._sock_sendfile_native / _sock_sendfile_native_impl and patches "
                     "asyncio.unix_events.os, privates of asyncio's selector loop "
                     "(tests/test_sockets.py covers sock_sendfile's errors and cancellation)")
mark_tests(UvcffiUnixSockSendfileTests, skips={
    name: _PRIVATE_SENDFILE for name in (
        "test_sock_sendfile_not_available", "test_sock_sendfile_cancel1",
        "test_sock_sendfile_cancel2", "test_sock_sendfile_blocking_error",
        "test_sock_sendfile_os_error_first_call", "test_sock_sendfile_os_error_next_call",
        "test_sock_sendfile_exception",
    )
})


class UvcffiFunctionalTests(UvcffiPolicyMixin, tue.TestFunctional):
    pass
