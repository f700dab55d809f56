"""The recipe tests' harness fails, within its bounds, on a server that hangs, and leaves no
process behind: a hang must fail a recipe test, never pass it."""
import signal

import pytest
from recipekit import Server, _group_members, free_port, python

HANG = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)")


def test_a_server_that_never_listens_fails_the_wait(tmp_path):
    with Server(python("-c", HANG), tmp_path / "log") as server:
        with pytest.raises(pytest.fail.Exception, match="not listening on port"):
            server.wait_listening(free_port(), timeout=1)
    assert not _group_members(server.pid)


def test_a_server_that_ignores_sigterm_fails_the_stop_and_is_killed(tmp_path):
    with Server(python("-c", HANG), tmp_path / "log") as server:
        server.wait_log(lambda log: "ready" in log, "ready")
        with pytest.raises(pytest.fail.Exception, match="still running 1 s after SIGTERM"):
            server.stop(signal.SIGTERM, timeout=1)
    assert server.proc.returncode == -signal.SIGKILL
    assert not _group_members(server.pid)


def test_a_worker_left_behind_fails_the_stop_and_is_killed(tmp_path):
    # the main process exits at SIGTERM; its child (same process group) does not
    code = ("import os, signal, subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {HANG!r}])\n"
            "signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
            "print('main ready', flush=True)\n"
            "time.sleep(120)\n")
    with Server(python("-c", code), tmp_path / "log") as server:
        server.wait_log(lambda log: "main ready" in log and log.count("ready") == 2,
                        "both processes ready")
        with pytest.raises(pytest.fail.Exception, match="group still running"):
            server.stop(signal.SIGTERM, timeout=1)
        assert server.proc.returncode == 0
    assert not _group_members(server.pid)
