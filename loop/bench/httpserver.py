"""The HTTP server under test: one process, one loop, one web framework.

    python -m uvcffi.bench.httpserver --loop rloop --app uvicorn [--http httptools] [--cpu 0]

Apps (the usual "hello" of web framework benchmarks):
    aiohttp  aiohttp.web, GET / answers the JSON {"message": "Hello, World!"}
             (web.AppRunner + web.TCPSite, no access log);
    uvicorn  a plaintext ASGI 3 app answering "Hello, World!" under uvicorn
             (uvicorn.Config + Server.serve() run on our loop; --http picks
             the HTTP parser: httptools, or h11 where httptools does not
             import; no lifespan, no websockets, no access log).

Control protocol: the same as server.py's (READY/start/stop/RUSAGE/quit, ERR
lines while serving), with one line more before READY:
    -> "INFO {json}": what runs: the loop's class, the framework's version,
       its HTTP parser.

The framework must really run on the loop asked for: start-up asserts that
the coroutine starting the server runs on the loop made by loops.new_loop(),
that the listening server belongs to it (uvicorn is never handed a loop
factory, and Server.serve() makes none), and the first request handled checks
it once more.  A mismatch is an ERROR at start-up (an n/a cell) or an ERR line
and a 500 on the first request (wrk counts it, the cell fails).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import threading
from typing import Any

from .loops import describe, new_loop
from .server import BACKLOG, _control, emit, error_reporter, prepare_process

APPS = ("aiohttp", "uvicorn")
HOST = "127.0.0.1"
HELLO = b"Hello, World!"

_LOOP = None            # the loop under test, set once in main()
_to_check = [True]      # the first request checks which loop runs it


class WrongLoop(RuntimeError):
    pass


def _check_loop(where: str) -> None:
    running = asyncio.get_running_loop()
    if running is not _LOOP:
        raise WrongLoop("%s runs on %s.%s, not on the loop under test (%s.%s)"
                        % (where, type(running).__module__, type(running).__qualname__,
                           type(_LOOP).__module__, type(_LOOP).__qualname__))


def _first_request() -> None:
    _to_check[0] = False
    try:
        _check_loop("the first request")
    except WrongLoop as e:
        emit("ERR " + describe(e))
        raise


# -- aiohttp -------------------------------------------------------------------

async def start_aiohttp(loop: asyncio.AbstractEventLoop) -> Any:
    import aiohttp
    from aiohttp import http_parser, web

    async def hello(request: Any) -> Any:
        if _to_check[0]:
            _first_request()
        return web.json_response({"message": "Hello, World!"})

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=BACKLOG)
    await site.start()
    server = site._server  # the asyncio.Server TCPSite made with loop.create_server
    if server is not None and getattr(server, "_loop", loop) is not loop:
        raise WrongLoop("aiohttp's listening server belongs to another loop")
    start_aiohttp.keep = (runner, site)  # type: ignore[attr-defined]  # kept alive
    c_parser = http_parser.HttpRequestParser is not getattr(
        http_parser, "HttpRequestParserPy", None
    )
    info = {"app": "aiohttp %s" % aiohttp.__version__,
            "parser": "aiohttp's C parser" if c_parser else "aiohttp's Python parser"}
    return runner.addresses[0][1], info


# -- uvicorn -------------------------------------------------------------------

async def plaintext(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI 3 app: "Hello, World!" as text/plain to any request."""
    if _to_check[0]:
        _first_request()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(HELLO))]})
    await send({"type": "http.response.body", "body": HELLO})


async def start_uvicorn(loop: asyncio.AbstractEventLoop, http: str) -> Any:
    import uvicorn

    config = uvicorn.Config(plaintext, host=HOST, port=0, loop="none", http=http, ws="none",
                            lifespan="off", interface="asgi3", access_log=False,
                            log_level="warning", backlog=BACKLOG)
    server = uvicorn.Server(config)
    # serve() runs until the process ends; start-up is over when server.started.
    task = loop.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # its exception, or:
            raise RuntimeError("uvicorn's serve() returned before it started")
        await asyncio.sleep(0.01)
    for srv in server.servers:
        if getattr(srv, "_loop", loop) is not loop:
            raise WrongLoop("uvicorn's listening server belongs to another loop")
    start_uvicorn.keep = (server, task)  # type: ignore[attr-defined]  # kept alive
    parser = importlib.import_module(http)  # uvicorn imported it already
    info = {"app": "uvicorn %s" % uvicorn.__version__,
            "parser": "%s %s" % (http, getattr(parser, "__version__", "?"))}
    return server.servers[0].sockets[0].getsockname()[1], info


async def start(loop: asyncio.AbstractEventLoop, app: Any, http: str) -> Any:
    _check_loop("start-up")
    if app == "aiohttp":
        port, info = await start_aiohttp(loop)
    elif app == "uvicorn":
        port, info = await start_uvicorn(loop, http)
    else:
        raise ValueError("unknown app %r (known: %s)" % (app, ", ".join(APPS)))
    _check_loop("start-up")
    info["loop"] = "%s.%s" % (type(loop).__module__, type(loop).__qualname__)
    return str(port), info


def main(argv: list[str] | None = None) -> None:
    global _LOOP
    ap = argparse.ArgumentParser(prog="python -m uvcffi.bench.httpserver")
    ap.add_argument("--loop", required=True)
    ap.add_argument("--app", required=True, choices=APPS)
    ap.add_argument("--http", default="httptools", choices=("httptools", "h11"),
                    help="uvicorn's HTTP parser")
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args(argv)
    prepare_process(args.cpu)
    try:
        loop = _LOOP = new_loop(args.loop)
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(error_reporter())
        where, info = loop.run_until_complete(start(loop, args.app, args.http))
    except BaseException as e:  # anything: the cell says n/a (reason)
        emit("ERROR " + describe(e))
        sys.stdout.flush()
        os._exit(3)
    threading.Thread(target=_control, daemon=True).start()
    emit("INFO " + json.dumps(info))
    emit("READY %s" % where)
    try:
        loop.run_forever()
    except BaseException as e:
        emit("ERROR run_forever: " + describe(e))
    os._exit(4)


if __name__ == "__main__":
    main()
