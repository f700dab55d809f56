"""Recipe: AnyIO on uvcffi.

    anyio.run(main, backend="asyncio", backend_options={"loop_factory": uvcffi.new_event_loop})
    uvcffi.install(); anyio.run(main, backend="asyncio")

AnyIO 4 runs main on asyncio.Runner(loop_factory=...) (4.0 and 4.1 did not pass the
backend options on; fixed in 4.2); without a loop_factory, AnyIO's loop comes from the event
loop policy, which uvcffi.install() sets: the way for older AnyIO.  An option an AnyIO
version does not know is ignored without a word, so the test checks the loop the server
ran on, not just that it answered.
"""
import pytest
from recipekit import (
    APPS,
    Server,
    check_said_on_uvcffi,
    dist_version,
    exercise,
    free_port,
    major_minor,
    python,
    require,
)


@pytest.mark.parametrize("mode", ["loop_factory", "policy"])
def test_anyio_tcp_server(tmp_path, mode):
    require("anyio")
    version = dist_version("anyio")
    if mode == "loop_factory" and major_minor(version) < (4, 2):
        pytest.skip(f"anyio {version} does not honour the loop_factory backend option "
                    "(AnyIO 4.2+ does); uvcffi.install() is the way there")
    port = free_port()
    argv = python(APPS / "serve_anyio.py", mode, port)
    with Server(argv, tmp_path / "anyio.log", cwd=APPS) as server:
        server.wait_listening(port)
        exercise(port, pid=server.pid)
        rc = server.stop()
        log = server.log()
        assert rc == 0, log
        check_said_on_uvcffi(log, "startup", [server.pid])
        check_said_on_uvcffi(log, "shutdown", [server.pid])
