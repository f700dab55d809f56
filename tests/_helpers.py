"""Helpers shared by the test modules (the fixtures are in conftest.py)."""
import asyncio

import uvcffi

# The loops the side-by-side tests run on: uvcffi, and asyncio's selector loop as the
# specification it must agree with.
LOOP_FACTORIES = {"uvcffi": uvcffi.new_event_loop, "asyncio": asyncio.SelectorEventLoop}


def run(loop, coro, timeout=10):
    """Run ``coro`` to completion on ``loop``, failing after ``timeout`` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def stream_echo(reader, writer, *, tolerate=()):
    """asyncio.start_server handler that echoes until EOF; exceptions in ``tolerate``
    (a peer going away mid-stream, say) end it quietly."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except tolerate:
        pass
    finally:
        writer.close()
