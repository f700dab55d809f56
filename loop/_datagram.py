"""Loop methods: create_datagram_endpoint (issue 5)."""


class DatagramMethods:
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""
