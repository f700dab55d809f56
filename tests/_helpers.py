"""Helpers shared by the test modules (the fixtures are in conftest.py)."""
import asyncio

import uvcffi

# The loops the side-by-side tests run on: uvcffi, and asyncio's selector loop as the
# specification it must agree with.
LOOP_FACTORIES = {"uvcffi": uvcffi.new_event_loop, "asyncio": asyncio.SelectorEventLoop}


def run(loop, coro, timeout=10):
    """Run ``coro`` to completion on ``loop``, failing after ``timeout`` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))
