"""Recipe: uvicorn on uvcffi.

    uvicorn app:app --loop uvcffi:new_event_loop [--workers 2]

uvicorn (0.36+) takes for --loop either one of its names or "module:attr", which it imports
and calls with no arguments to make each loop (Config.get_loop_factory, asyncio.Runner's
loop_factory): here uvcffi.new_event_loop.  With --workers, every worker process does the
same."""
import hashlib
import http.client
import json
import os
import signal

import pytest

from recipekit import (
    APPS, Server, assert_uvcffi, free_port, python, request, require, said)

LOOP = "uvcffi:new_event_loop"


def uvicorn_argv(port, *extra):
    return python("-m", "uvicorn", "asgi_app:app", "--loop", LOOP,
                  "--host", "127.0.0.1", "--port", port, *extra)


@pytest.fixture(autouse=True)
def _uvicorn():
    require("uvicorn")
    import uvicorn.config

    if not hasattr(uvicorn.config.Config, "get_loop_factory"):
        pytest.skip(f"uvicorn {uvicorn.__version__} predates --loop module:attr "
                    "(loop factories came in uvicorn 0.36)")


def test_loop_option_resolves_to_uvcffi_new_event_loop():
    import uvicorn.config

    import uvcffi

    config = uvicorn.config.Config("asgi_app:app", loop=LOOP)
    assert config.get_loop_factory() is uvcffi.new_event_loop


def test_uvicorn_loop_uvcffi(tmp_path):
    port = free_port()
    with Server(uvicorn_argv(port), tmp_path / "uvicorn.log", cwd=APPS) as server:
        server.wait_listening(port)

        reply = request(port, "/")
        assert reply.status == 200
        info = reply.json()
        assert_uvcffi(info)
        assert info["pid"] == server.pid

        body = os.urandom(300 * 1024)
        echo = request(port, "/echo", method="POST", body=body).json()
        assert (echo["size"], echo["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
        assert_uvcffi(echo)

        big = request(port, "/big?n=%d" % (2 << 20))
        assert big.status == 200 and big.body == b"x" * (2 << 20)

        rc = server.stop()
        log = server.log()
        # uvicorn shuts down, then raises the signal it caught again (default action).
        assert rc == -signal.SIGTERM, log
        for event in ("startup", "shutdown"):
            infos = said(log, event)
            assert [i["pid"] for i in infos] == [server.pid], log
            assert_uvcffi(infos[0])
        assert "Application shutdown complete." in log


@pytest.mark.timeout(240)
def test_uvicorn_workers_2(tmp_path):
    """Two worker processes, each on its own uvcffi loop, both taking connections from the
    shared listening socket: while one worker's loop is held (a request to /hold blocks it
    on purpose), the other must accept and answer."""
    port = free_port()
    marker, release = tmp_path / "held", tmp_path / "release"
    with Server(uvicorn_argv(port, "--workers", "2"), tmp_path / "uvicorn.log",
                cwd=APPS) as server:
        server.wait_log(lambda log: len(said(log, "startup")) == 2, "startup of both workers")
        server.wait_listening(port)
        started = said(server.log(), "startup")
        for info in started:
            assert_uvcffi(info)
        workers = {info["pid"] for info in started}
        assert len(workers) == 2 and server.pid not in workers

        held = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            held.request("GET", f"/hold?marker={marker}&release={release}",
                         headers={"Connection": "close"})
            server.wait_log(lambda log: marker.exists(), "held request (its marker file)")
            holder = json.loads(marker.read_text())
            other = request(port, "/").json()
            release.touch()
            held_reply = held.getresponse()
            assert held_reply.status == 200
            answered = json.loads(held_reply.read())
        finally:
            release.touch()
            held.close()
        for info in (holder, other, answered):
            assert_uvcffi(info)
        assert holder == answered
        assert {holder["pid"], other["pid"]} == workers

        rc = server.stop()
        log = server.log()
        assert rc == 0, log
        stopped = said(log, "shutdown")
        assert {info["pid"] for info in stopped} == workers, log
        for info in stopped:
            assert_uvcffi(info)
