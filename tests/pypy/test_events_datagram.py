"""test_events' and test_base_events' datagram tests (create_datagram_endpoint) on uvcffi."""
from ._harness import skip_unless_pypy_39, test_utils, uvcffi_case

skip_unless_pypy_39()

from test.test_asyncio import test_base_events, test_events  # noqa: E402

import uvcffi  # noqa: E402

_PATCHES_SOCKET = "patches asyncio.base_events.socket (asyncio's private module reference)"

UvcffiDatagramEventTests = uvcffi_case(
    "UvcffiDatagramEventTests",
    (test_events.UnixEventLoopTestsMixin, test_utils.TestCase),
    keep=lambda name: name.startswith("test_create_datagram_endpoint"),
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
        "test_create_datagram_endpoint_ip_addr": _PATCHES_SOCKET + " and mocks loop._add_reader",
        "test_create_datagram_endpoint_connect_err": "mocks loop.sock_connect to fail: "
        "uvcffi connects a datagram socket with socket.connect() itself (it never blocks)",
    },
    module=__name__,
)
del _UvcffiBaseEventLoopDatagram  # only the class above is a test case
