"""aiohttp's web.run_app on uvcffi: python serve_aiohttp.py {loop|install} PORT.

    loop     web.run_app(app, loop=uvcffi.new_event_loop())
    install  uvcffi.install(); web.run_app(app)

run_app stops on SIGINT/SIGTERM (through loop.add_signal_handler)."""
import hashlib
import sys

from aiohttp import web
from loopinfo import loop_info, say

import uvcffi


async def index(request):
    return web.json_response(loop_info())


async def echo(request):
    body = await request.read()
    return web.json_response(
        dict(loop_info(), size=len(body), sha256=hashlib.sha256(body).hexdigest()))


async def big(request):
    return web.Response(body=b"x" * int(request.query["n"]))


async def on_startup(app):
    say("startup")


async def on_shutdown(app):
    say("shutdown")


def make_app():
    app = web.Application(client_max_size=16 << 20)
    app.router.add_get("/", index)
    app.router.add_post("/echo", echo)
    app.router.add_get("/big", big)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "loop":
        web.run_app(make_app(), host="127.0.0.1", port=port, loop=uvcffi.new_event_loop())
    elif mode == "install":
        uvcffi.install()
        web.run_app(make_app(), host="127.0.0.1", port=port)
    else:
        sys.exit(f"unknown mode {mode!r}")
