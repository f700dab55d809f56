"""Recipe: aiohttp's web.run_app on uvcffi.

    web.run_app(app, loop=uvcffi.new_event_loop())
    uvcffi.install(); web.run_app(app)   # run_app makes its loop with asyncio.new_event_loop()
"""
import signal

import pytest
from recipekit import APPS, Server, check_said_on_uvcffi, exercise, free_port, python, require


# run_app stops on SIGINT (Ctrl-C) and SIGTERM alike: one each.
@pytest.mark.parametrize("mode, stop", [("loop", signal.SIGINT), ("install", signal.SIGTERM)],
                         ids=["loop-SIGINT", "install-SIGTERM"])
def test_aiohttp_run_app(tmp_path, mode, stop):
    require("aiohttp")
    port = free_port()
    argv = python(APPS / "serve_aiohttp.py", mode, port)
    with Server(argv, tmp_path / "aiohttp.log", cwd=APPS) as server:
        server.wait_listening(port)
        exercise(port, pid=server.pid)
        rc = server.stop(stop)
        log = server.log()
        assert rc == 0, log
        check_said_on_uvcffi(log, "startup", [server.pid])
        check_said_on_uvcffi(log, "shutdown", [server.pid])
        assert "Warning" not in log and "Traceback" not in log, log
