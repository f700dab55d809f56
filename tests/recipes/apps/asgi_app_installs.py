"""asgi_app for servers that start workers as new processes (hypercorn --workers N): the
module makes uvcffi the event loop policy when a worker imports it, before the worker makes
its loop."""
import uvcffi

uvcffi.install()

from asgi_app import app  # noqa: E402

__all__ = ["app"]
