"""uvcffi.Loop: the core loop with the methods of each transport area mixed in."""
from __future__ import annotations

from ._core import CoreLoop
from ._datagram import DatagramMethods
from ._dns import DnsMethods
from ._pipes import PipeMethods
from ._sockets import SocketMethods
from ._streams import StreamMethods
from ._subprocess import SubprocessMethods
from ._tls import TLSMethods


class Loop(
    StreamMethods,
    TLSMethods,
    SocketMethods,
    DnsMethods,
    DatagramMethods,
    PipeMethods,
    SubprocessMethods,
    CoreLoop,
):
    """An asyncio event loop whose I/O runs on libuv (a subclass of asyncio.AbstractEventLoop)."""
