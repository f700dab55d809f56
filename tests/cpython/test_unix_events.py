"""test_unix_events' loop-level tests (Unix sockets, sock_sendfile, add_reader checks) on uvcffi.

SelectorEventLoopUnixSocketTests builds its loop as asyncio.SelectorEventLoop() in setUp:
the subclass here builds a uvcffi loop instead.  The other two classes make theirs with
asyncio.new_event_loop(), which a uvcffi policy answers while they run.
"""
import uvcffi

from ._harness import (
    UvcffiPolicyMixin,
    mark_tests,
    requires_cpython_311,
    requires_stdlib_tests,
    test_utils,
)

pytestmark = [requires_stdlib_tests, requires_cpython_311]


if test_utils is not None:
    from test.test_asyncio import test_unix_events as tue

    class UvcffiUnixSocketTests(tue.SelectorEventLoopUnixSocketTests):
        def setUp(self):
            test_utils.TestCase.setUp(self)
            self.loop = uvcffi.new_event_loop()
            self.set_event_loop(self.loop)

    mark_tests(UvcffiUnixSocketTests, skips={
        "test_create_unix_server_bind_error": "patches asyncio.unix_events.socket (the module "
        "reference of asyncio's own loop); tests/test_server.py checks the socket is closed",
    })

    class UvcffiUnixSockSendfileTests(
        UvcffiPolicyMixin, tue.SelectorEventLoopUnixSockSendfileTests
    ):
        pass

    _private_sendfile = ("drives loop._sock_sendfile_native_impl / patches asyncio.unix_events.os, "
                         "privates of asyncio's selector loop (tests/test_sockets.py covers "
                         "sock_sendfile's errors and cancellation)")
    mark_tests(UvcffiUnixSockSendfileTests, skips={
        name: _private_sendfile for name in (
            "test_sock_sendfile_not_available", "test_sock_sendfile_cancel1",
            "test_sock_sendfile_cancel2", "test_sock_sendfile_blocking_error",
            "test_sock_sendfile_os_error_first_call", "test_sock_sendfile_os_error_next_call",
            "test_sock_sendfile_exception",
        )
    })

    class UvcffiFunctionalTests(UvcffiPolicyMixin, tue.TestFunctional):
        pass
