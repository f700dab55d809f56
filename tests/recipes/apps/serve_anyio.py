"""An AnyIO TCP server (HTTP through tinyhttp's parse_head/respond) on a uvcffi loop:
python serve_anyio.py {loop_factory|policy} PORT.

    loop_factory  anyio.run(main, backend="asyncio",
                            backend_options={"loop_factory": uvcffi.new_event_loop})
    policy        uvcffi.install(); anyio.run(main, backend="asyncio")   # anyio before 4

Serves until SIGTERM (anyio.open_signal_receiver)."""
import signal
import sys
from functools import partial

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from loopinfo import say
from tinyhttp import parse_head, respond

import uvcffi


async def handle(stream):
    async with stream:
        buffered = BufferedByteReceiveStream(stream)
        try:
            head = await buffered.receive_until(b"\r\n\r\n", 65536)
            method, target, headers = parse_head(head + b"\r\n\r\n")
            body = await buffered.receive_exactly(int(headers.get("content-length", "0")))
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
            return  # a client that went away (the tests' readiness probes connect and close)
        await stream.send(respond(method, target, body))


async def main(port):
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    say("startup")
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            tg.start_soon(listener.serve, handle)
            async for _ in signals:
                tg.cancel_scope.cancel()
                break
    await listener.aclose()
    say("shutdown")


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "loop_factory":
        anyio.run(partial(main, port), backend="asyncio",
                  backend_options={"loop_factory": uvcffi.new_event_loop})
    elif mode == "policy":
        uvcffi.install()
        anyio.run(partial(main, port), backend="asyncio")
    else:
        sys.exit(f"unknown mode {mode!r}")
