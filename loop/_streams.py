"""Loop methods: create_connection, create_server, create_unix_connection, create_unix_server, connect_accepted_socket, sendfile (issue 3)."""


class StreamMethods:
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""
