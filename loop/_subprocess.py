"""Loop methods: subprocess_exec and subprocess_shell (issue 4)."""


class SubprocessMethods:
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""
