"""uvcffi.bench's HTTP rows run: the server starts on each loop and answers, and
one wrk run gives figures.  Nothing here asserts timing (the benchmark measures;
DESIGN.md "Measuring"): a missing framework, loop or wrk skips."""

import asyncio
import functools
import http.client
import json
import platform
import shutil

import pytest

from uvcffi.bench import httpbench, httpserver, loops
from uvcffi.bench._proc import Child, python_module_argv


@functools.cache
def _missing(module):
    """None when `module` imports on this interpreter, else why not (a child tries)."""
    return loops.import_error(module)


def _skip_unless(*modules):
    for m in modules:
        why = _missing(m)
        if why:
            pytest.skip("%s does not import here: %s" % (m, why))


EXPECTED = {
    "aiohttp": (b'{"message": "Hello, World!"}', "application/json"),
    "uvicorn": (b"Hello, World!", "text/plain"),
}


@pytest.mark.parametrize("app", httpserver.APPS)
@pytest.mark.parametrize("loop_name", loops.ALL)
def test_server_answers_on_its_loop(loop_name, app):
    _skip_unless(app, *(() if loop_name == "asyncio" else (loop_name,)))
    parser = "httptools" if _missing("httptools") is None else "h11"
    argv = python_module_argv("httpserver", "--loop", loop_name, "--app", app, "--http", parser)
    child = Child(argv, name="%s %s server" % (loop_name, app))
    try:
        _, info = child.expect("INFO", 60)
        _, port = child.expect("READY", 10)
        info = json.loads(info)
        # The loop the app was served by, as the server found it at start-up.
        assert info["loop"].split(".")[0] == loop_name
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        want_body, want_type = EXPECTED[app]
        assert resp.status == 200
        assert body == want_body
        assert resp.getheader("content-type").startswith(want_type)
        assert child.notes == []  # no ERR line: the first request ran on the loop
    finally:
        child.close()


def test_a_server_on_another_loop_is_refused(monkeypatch):
    other = asyncio.new_event_loop()
    monkeypatch.setattr(httpserver, "_LOOP", object())  # "the loop under test" is not `other`
    try:
        with pytest.raises(httpserver.WrongLoop):
            other.run_until_complete(httpserver.start(other, "uvicorn", "h11"))
    finally:
        other.close()


def test_a_loop_that_does_not_import_is_named():
    assert loops.import_error("asyncio") is None
    assert loops.import_error("uvcffi_bench_no_such_loop") == "not installed"


def test_one_http_measurement_gives_figures(monkeypatch):
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (apt-get install wrk)")
    _skip_unless("uvicorn")
    from uvcffi.bench.runner import Runner, Settings, select

    # A one-second warm-up: figures are not the point here, that they come is.
    monkeypatch.setitem(httpbench.WARM, platform.python_implementation(),
                        {"requests": 1, "min": 1, "max": 1})
    settings = Settings(quick=True, reps=1)
    settings.noisy_retries = 0
    runner = Runner(["asyncio"], select(["http-uvicorn-plaintext"]), settings, log=lambda m: None)
    results = runner.run()
    figures = results.samples.get("http-uvicorn-plaintext", {}).get("asyncio")
    assert figures, results.errors
    fig = figures[0]
    assert fig["requests"] > 0
    assert fig["rps"] > 0 and fig["cpu_us"] > 0
    assert fig["user_us"] + fig["sys_us"] == pytest.approx(fig["cpu_us"])
