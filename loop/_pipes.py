"""Loop methods: connect_read_pipe and connect_write_pipe (issue 4)."""


class PipeMethods:
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""
