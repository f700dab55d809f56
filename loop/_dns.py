"""Loop methods: getaddrinfo and getnameinfo on libuv's thread pool (issue 3)."""


class DnsMethods:
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""
