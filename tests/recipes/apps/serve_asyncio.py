"""A plain asyncio server (asyncio.start_server, tinyhttp) run on uvcffi the ways the README
shows: python serve_asyncio.py {runner|run|uvcffi-run|policy} PORT.

    runner       with asyncio.Runner(loop_factory=uvcffi.new_event_loop) as runner:
                     runner.run(main())                                  # Python 3.11+
    run          asyncio.run(main(), loop_factory=uvcffi.new_event_loop)  # Python 3.12+
    uvcffi-run   uvcffi.run(main())
    policy       asyncio.run(main()): for `python -m uvcffi serve_asyncio.py policy PORT`

main() serves until SIGTERM (loop.add_signal_handler), then closes the server."""
import asyncio
import signal
import sys

from loopinfo import say
from tinyhttp import handle

import uvcffi


async def main(port):
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    say("startup")
    async with server:
        await stop.wait()
    say("shutdown")


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "runner":
        with asyncio.Runner(loop_factory=uvcffi.new_event_loop) as runner:
            runner.run(main(port))
    elif mode == "run":
        asyncio.run(main(port), loop_factory=uvcffi.new_event_loop)
    elif mode == "uvcffi-run":
        uvcffi.run(main(port))
    elif mode == "policy":
        asyncio.run(main(port))
    else:
        sys.exit(f"unknown mode {mode!r}")
