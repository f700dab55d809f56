"""test_events' and test_base_events' datagram tests (create_datagram_endpoint) on uvcffi."""
import asyncio

import uvcffi

from ._harness import requires_cpython_311, requires_stdlib_tests, test_utils, uvcffi_case

pytestmark = [requires_stdlib_tests, requires_cpython_311]

_PATCHES_SOCKET = "patches asyncio.base_events.socket (asyncio's private module reference)"

# The test itself calls loop.getaddrinfo, which comes with the sockets work (issue 3).
_NO_GETADDRINFO = (
    {"test_create_datagram_endpoint_sock": "calls loop.getaddrinfo, not implemented yet"}
    if uvcffi.Loop.getaddrinfo is asyncio.AbstractEventLoop.getaddrinfo
    else {}
)

if test_utils is not None:
    from test.test_asyncio import test_base_events, test_events

    UvcffiDatagramEventTests = uvcffi_case(
        "UvcffiDatagramEventTests",
        (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
        keep=lambda name: name.startswith("test_create_datagram_endpoint"),
        skips=_NO_GETADDRINFO,
        module=__name__,
    )

    class _UvcffiBaseEventLoopDatagram(test_base_events.BaseEventLoopWithSelectorTests):
        def setUp(self):
            test_utils.TestCase.setUp(self)
            self.loop = uvcffi.new_event_loop()
            self.set_event_loop(self.loop)

    UvcffiBaseEventLoopDatagramTests = uvcffi_case(
        "UvcffiBaseEventLoopDatagramTests",
        (_UvcffiBaseEventLoopDatagram,),
        factory="_unused_factory",
        keep=lambda name: name.startswith("test_create_datagram_endpoint"),
        skips={
            "test_create_datagram_endpoint_no_addrinfo": _PATCHES_SOCKET,
            "test_create_datagram_endpoint_socket_err": _PATCHES_SOCKET,
            "test_create_datagram_endpoint_setblk_err": _PATCHES_SOCKET,
            "test_create_datagram_endpoint_cant_bind": _PATCHES_SOCKET,
            "test_create_datagram_endpoint_nosoreuseport": _PATCHES_SOCKET,
            "test_create_datagram_endpoint_ip_addr": _PATCHES_SOCKET
            + " and mocks loop._add_reader",
            "test_create_datagram_endpoint_connect_err": "mocks loop.sock_connect to fail: "
            "uvcffi connects a datagram socket with socket.connect() itself (it never blocks)",
        },
        module=__name__,
    )
    del _UvcffiBaseEventLoopDatagram  # only the class above is a test case
