"""Loop methods: the sock_* methods and sock_sendfile (issue 3)."""


class SocketMethods:
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""
