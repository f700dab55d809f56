"""Recipe: plain asyncio programs on uvcffi, with asyncio's own runners.

    with asyncio.Runner(loop_factory=uvcffi.new_event_loop) as runner:   # Python 3.11+
        runner.run(main())
    asyncio.run(main(), loop_factory=uvcffi.new_event_loop)              # Python 3.12+
    uvcffi.run(main())                                                   # any Python
    python -m uvcffi app.py                       # app.py calls asyncio.run(main())
"""
import sys

import pytest
from recipekit import APPS, RUNTIME, Server, check_said_on_uvcffi, exercise, free_port, python

SERVE = APPS / "serve_asyncio.py"


ARGV = {
    "runner": python(SERVE, "runner"),
    "run": python(SERVE, "run"),
    "uvcffi-run": python(SERVE, "uvcffi-run"),
    "python-m-uvcffi": python("-m", "uvcffi", SERVE, "policy"),
}


@pytest.mark.parametrize("mode", [
    pytest.param("runner", marks=pytest.mark.skipif(
        sys.version_info < (3, 11),
        reason=f"asyncio.Runner is new in Python 3.11; this is {RUNTIME}")),
    pytest.param("run", marks=pytest.mark.skipif(
        sys.version_info < (3, 12),
        reason=f"asyncio.run(loop_factory=) is new in Python 3.12; this is {RUNTIME}")),
    "uvcffi-run",
    "python-m-uvcffi",
])
def test_asyncio_server(tmp_path, mode):
    port = free_port()
    with Server(ARGV[mode] + [port], tmp_path / "server.log", cwd=APPS) as server:
        server.wait_listening(port)
        exercise(port, pid=server.pid)
        rc = server.stop()
        log = server.log()
        assert rc == 0, log
        check_said_on_uvcffi(log, "startup", [server.pid])
        check_said_on_uvcffi(log, "shutdown", [server.pid])
