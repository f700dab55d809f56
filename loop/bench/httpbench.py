"""HTTP workloads: a web framework on each loop, driven by wrk.

Each row is one framework app (httpserver.py) served by one loop in its own
process pinned to the server CPU, loaded by wrk (`wrk -t1 -c50`, HTTP/1.1
keep-alive, 50 connections, as many requests in flight as connections) pinned
to the client CPU.  Per measurement: a warm-up (one-second wrk runs until the
server has answered enough requests for PyPy's JIT to have compiled the
request path: see WARM), then the measured run,
bracketed by the server's "start"/"stop" (its own getrusage), so the server CPU
counted is exactly the work of the measured run's requests:

    req/s        = wrk's completed requests / wrk's run time;
    CPU per req  = server user+sys over the run / completed requests;
    p50/p99      = wrk's latency percentiles.

A run with a non-2xx answer or a socket error fails its cell (n/a with wrk's
counts and the server's first ERR line): a fast wrong answer is no figure.

This module only adds to the runner: the workload rows, a preflight that
skips rows (with the reason) when wrk or a framework is missing, and the
measuring of one group; runner.py calls those three.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from typing import Any

from . import loadgen
from ._proc import Child, ChildError, python_module_argv
from .loops import import_error

CONNS = 50          # wrk -c
THREADS = 1         # wrk -t: one client CPU
# Warm-up before every measured run: one-second wrk runs (wrk's -d counts
# whole seconds) until the server has answered `requests` and `min` seconds
# have passed, or `max` seconds have.  PyPy's JIT warms per request, not per
# second: on this shared 2-core box, 1 s windows against fresh PyPy servers
# (uvcffi and asyncio, both apps, three series each) gave server CPU per
# request within 10-20% of its plateau after about 30,000-50,000 requests,
# whatever the req/s (aiohttp on uvcffi: 898, 375, 119, 71, 69, 67 ... us/req
# over its first 30k requests; on asyncio 856, 220, 104, 97, 89, 75 over its
# first 35k, and ~60 only after 100k); a fixed number of seconds was 4 to 8 s
# on a quiet box and not enough on a busy one.  CPython is flat from the first
# second.
WARM = {"PyPy": {"requests": 50000, "min": 4, "max": 20},
        "CPython": {"requests": 2000, "min": 1, "max": 5}}
WINDOW = {True: 1, False: 3}   # measured run, quick / full

# name, app (httpserver --app), modules the app needs, what the row runs
APPS = (
    ("http-aiohttp-json", "aiohttp", ("aiohttp",),
     "aiohttp.web (AppRunner + TCPSite), GET / -> JSON hello"),
    ("http-uvicorn-plaintext", "uvicorn", ("uvicorn",),
     "uvicorn (Config + Server.serve() on the loop) + httptools, plaintext ASGI app; "
     "h11 where httptools does not import"),
)

DONE_LUA = """\
-- one machine-readable line at the end; no per-request Lua (wrk stays on its fast path)
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""  # noqa: E501  (the Lua format string is one line: the line wrk prints)


def workloads(Workload: Any) -> Any:
    return [Workload(name, "http", name, "rps", "req/s", kind=app, transport="http", doc=doc)
            for name, app, _, doc in APPS]


def _needs(w: Any) -> Any:
    for name, _, needs, _ in APPS:
        if name == w.name:
            return needs
    return ()


def warm_plan() -> Any:
    return WARM.get(platform.python_implementation(), WARM["PyPy"])


def window_secs(settings: Any) -> Any:
    return WINDOW[bool(settings.quick)]


def cost(settings: Any) -> Any:
    """Rough seconds of one measurement, for the runner's pacing."""
    plan = warm_plan()
    return 1.5 + (plan["min"] + plan["max"]) / 3.0 + window_secs(settings)


class _State:
    wrk: str | None = None
    lua: str | None = None
    http = "httptools"    # uvicorn's parser
    h11_why: str          # why h11 replaced httptools (set with http = "h11")


def preflight(runner: Any) -> None:
    """Skip, with the reason, the rows that cannot run here; note what runs."""
    wls = [w for w in runner.workloads if w.family == "http"]
    if not wls:
        return
    st = runner.http_state = _State()
    st.wrk = shutil.which("wrk")
    if not st.wrk:
        reason = "skipped: wrk is not installed (apt-get install wrk; tools/bench.sh installs it)"
        runner.notes.append("HTTP workloads " + reason)
        runner._drop(wls, reason)
        return
    dropped = []
    for w in wls:
        for mod in _needs(w):
            why = import_error(mod)
            if why:
                reason = "skipped: %s does not import here (%s)" % (mod, why)
                runner.notes.append("%s %s" % (w.name, reason))
                runner._drop([w], reason)
                dropped.append(w)
                break
    wls = [w for w in wls if w not in dropped]
    if any(w.kind == "uvicorn" for w in wls):
        why = import_error("httptools")
        if why:
            st.http = "h11"
            st.h11_why = "httptools does not import on %s: %s" % (
                platform.python_implementation(), why)
    st.lua = os.path.join(runner.tmp, "wrk-done.lua")
    with open(st.lua, "w") as f:
        f.write(DONE_LUA)
    try:
        out = subprocess.run([st.wrk, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=10).stdout.decode(errors="replace")
        version = out.split()[1].split("/")[-1] if out.startswith("wrk") else "?"
    except (OSError, subprocess.SubprocessError, IndexError):
        version = "?"
    if wls:
        runner.notes.append(
            "HTTP rows: wrk %s -t%d -c%d pinned to CPU %d; warm-up until %d requests and "
            "%d s (at most %d s), then %d s measured; req/s from wrk, CPU per request from the "
            "server's getrusage over the measured run"
            % (version, THREADS, CONNS, loadgen.CLIENT_CPU, warm_plan()["requests"],
               warm_plan()["min"], warm_plan()["max"], window_secs(runner.s)))


def run_group(runner: Any, rep: int, order: Any, wls: Any) -> None:
    """Every loop of `order` on the one app of `wls` (a server per loop)."""
    st = runner.http_state
    for loop in order:
        for w in wls:
            server = None
            try:
                server = _start(runner, loop, w, st)
                fig = _measure(runner, server, w, st)
                runner.results.add(w.name, loop, fig)
                runner.log("  [%d/%d] %-22s %-8s %9s req/s p99 %7.0f us  cpu %6.1f us/req"
                           "  (warm-up %d s, %s req)"
                           % (rep + 1, runner.s.reps, w.name, loop, _si(fig["rps"]),
                              fig["p99_us"], fig["cpu_us"], fig["warm_s"],
                              _si(fig["warm_requests"])))
            except Exception as e:  # one cell, not the run
                reason = runner._why(e, server)
                runner.results.fail(w.name, loop, reason)
                runner.log("  [%d/%d] %-22s %-8s n/a (%s)" % (rep + 1, runner.s.reps, w.name,
                                                             loop, reason))
            finally:
                if server is not None:
                    server.close()
                runner._done_est += cost(runner.s)


def _start(runner: Any, loop: str, w: Any, st: Any) -> Any:
    argv = python_module_argv("httpserver", "--loop", loop, "--app", w.kind,
                              "--http", st.http, "--cpu", loadgen.SERVER_CPU)
    server = Child(argv, cpu=loadgen.SERVER_CPU, name="%s %s server" % (loop, w.kind))
    try:
        _, info = server.expect("INFO", runner.s.start_timeout)
        _, port = server.expect("READY", 10)
    except ChildError as e:
        server.close()
        raise ChildError("server did not start: %s" % e)
    server.url = "http://127.0.0.1:%s/" % port  # type: ignore[attr-defined]  # where the clients go
    if not getattr(w, "note", ""):
        info = json.loads(info)
        note = "%s, %s" % (info.get("app"), info.get("parser"))
        if w.kind == "uvicorn" and st.http == "h11":
            note += " (%s)" % st.h11_why
        w.note = note
    return server


def _measure(runner: Any, server: Any, w: Any, st: Any) -> Any:
    from .runner import RETRY_NOISE, noise  # not at import: runner imports this module
    warm_s, warm_n = _warm(st, server.url)
    best = None
    for attempt in range(1 + runner.s.noisy_retries):
        if attempt:
            runner.retries += 1
        fig = _window(st, server, window_secs(runner.s))
        fig["attempts"] = attempt + 1
        fig["warm_s"], fig["warm_requests"] = warm_s, warm_n
        if best is None or noise(fig) < noise(best):
            best = fig
        if noise(best) < RETRY_NOISE or not runner._may_retry():
            break
    return best


def _warm(st: Any, url: str) -> Any:
    """Load the server until the JIT (and the allocator, the caches) are warm;
    (seconds, requests) it took."""
    plan = warm_plan()
    secs = n = 0
    while secs < plan["max"] and (secs < plan["min"] or n < plan["requests"]):
        res, _ = _wrk(st, url, 1)
        secs += 1
        n += int(res["requests"])
    return secs, n


def _window(st: Any, server: Any, secs: float) -> Any:
    server.send("start")
    ticks0 = loadgen.cpu_times()
    res, ru = _wrk(st, server.url, secs)
    server.send("stop")
    ticks1 = loadgen.cpu_times()
    try:
        _, line = server.expect("RUSAGE", 10)
    except ChildError as e:
        raise ChildError("server: %s" % e)
    ut, stime, wall = (float(x) for x in line.split()[:3])
    preempt = float(line.split()[3]) if len(line.split()) > 3 else 0.0
    n = res["requests"]
    secs_run = res["duration_us"] / 1e6
    bad = {k: int(res[k]) for k in ("status", "connect", "read", "write", "timeout") if res[k]}
    if n <= 0:
        raise ChildError("wrk completed no request in %.1f s (server stalled)" % secs_run)
    if bad:
        what = ", ".join("%d %s" % (v, "non-2xx answers" if k == "status" else k + " errors")
                         for k, v in bad.items())
        raise ChildError("wrk: %s in %d requests" % (what, n))
    client_cpu = ru.ru_utime + ru.ru_stime if ru is not None else 0.0
    fig = {
        "rps": n / secs_run,
        "p50_us": res["p50_us"],
        "p99_us": res["p99_us"],
        "cpu_us": (ut + stime) / n * 1e6,
        "user_us": ut / n * 1e6,
        "sys_us": stime / n * 1e6,
        "server_busy": (ut + stime) / wall if wall > 0 else 0.0,
        "client_busy": client_cpu / secs_run,
        "server_preempt_s": preempt / wall if wall > 0 else 0.0,
        "client_preempt_s": ru.ru_nivcsw / secs_run if ru is not None else 0.0,
        "requests": n,
    }
    if loadgen.SERVER_CPU == loadgen.CLIENT_CPU:
        sides: tuple[tuple[Any, Any, str], ...] = (
            (loadgen.SERVER_CPU, fig["server_busy"] + fig["client_busy"], "others_cpu0"),)
    else:
        sides = ((loadgen.SERVER_CPU, fig["server_busy"], "others_cpu0"),
                 (loadgen.CLIENT_CPU, fig["client_busy"], "others_cpu1"))
    for cpu, own, key in sides:
        share = loadgen._busy_share(ticks0, ticks1, cpu)
        if share is not None:
            fig[key] = max(0.0, share - own)
    return fig


def _wrk(st: Any, url: str, secs: float) -> Any:
    """Run wrk for `secs` whole seconds; ({figures}, its rusage)."""
    argv = [st.wrk, "-t%d" % THREADS, "-c%d" % CONNS, "-d%ds" % secs, "--timeout", "10s",
            "-s", st.lua, url]
    taskset = shutil.which("taskset")
    if taskset:  # pinned from exec on, wrk's thread included
        argv = [taskset, "-c", str(loadgen.CLIENT_CPU)] + argv
    wrk = Child(argv, cpu=loadgen.CLIENT_CPU, name="wrk")
    try:
        try:
            _, rest = wrk.expect("RESULT", secs + 30)
        except ChildError as e:
            raise ChildError("wrk: %s" % e)
        ru = _reap(wrk, 10)
    finally:
        wrk.close()
    res = loadgen._kv(rest)
    if "requests" not in res or "duration_us" not in res:
        raise ChildError("wrk: unreadable result %r" % rest[:100])
    return res, ru


def _reap(child: Any, timeout: float) -> Any:
    """Wait for `child` to exit; its resource usage (wrk's own CPU time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, ru = os.wait4(child.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already: its CPU time is lost
            return None
        if pid:
            child.proc.returncode = os.waitstatus_to_exitcode(status)
            return ru
        if time.monotonic() > deadline:
            raise ChildError("wrk did not exit after its run")
        time.sleep(0.01)


def _si(x: float) -> Any:
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return "%.3g%s" % (x / div, suf)
    return "%.3g" % x

