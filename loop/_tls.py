"""Loop methods: start_tls and the TLS layer under ssl= (issue 6)."""


class TLSMethods:
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""
