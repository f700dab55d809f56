"""Hypercorn served from a program, on a uvcffi loop: python serve_hypercorn.py PORT.

hypercorn.asyncio.serve() runs on whatever loop runs it; without a shutdown_trigger it
stops on SIGINT/SIGTERM (through loop.add_signal_handler)."""
import sys

from asgi_app import app
from hypercorn.asyncio import serve
from hypercorn.config import Config

import uvcffi

config = Config()
config.bind = [f"127.0.0.1:{sys.argv[1]}"]
uvcffi.run(serve(app, config))
