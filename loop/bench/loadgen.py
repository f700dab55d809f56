"""Build and drive the C programs: the load generator and the C echo floor.

They are compiled on demand with the system C compiler (`cc -O2`) into a cache
keyed by the source's hash, so an edited .c file is rebuilt and an unchanged one
is compiled once per machine.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Any

from ._proc import Child, ChildError

HERE = os.path.dirname(os.path.abspath(__file__))


def _cpus() -> Any:
    """(server CPU, client CPU): the first two CPUs this process may use, so a
    container restricted to, say, CPUs 2-3 still gets two distinct ones.
    Only the orchestrator's values count (before it pins itself); children
    are told theirs with --cpu."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    if not allowed:
        allowed = [0]
    return allowed[0], allowed[1] if len(allowed) > 1 else allowed[0]


# Every server on one CPU, the load generator on another (DESIGN.md "Measuring").
SERVER_CPU, CLIENT_CPU = _cpus()


class BuildError(Exception):
    pass


def _cache_dirs() -> Any:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    yield os.path.join(base, "uvcffi-bench")
    yield os.path.join(tempfile.gettempdir(), "uvcffi-bench-%d" % os.getuid())


# Libraries a C program links with (the others need only libc).
LIBS = {"tls_loadgen": ["-lssl", "-lcrypto", "-pthread"]}


def build(name: str) -> Any:
    """Path of the compiled `name`.c, compiling it first if needed."""
    src = os.path.join(HERE, name + ".c")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise BuildError("no C compiler (cc) found; install gcc to run the network workloads")
    last = None
    for d in _cache_dirs():
        exe = os.path.join(d, "%s-%s" % (name, digest))
        if os.access(exe, os.X_OK):
            return exe
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            last = e
            continue
        tmp = "%s.%d.tmp" % (exe, os.getpid())
        r = subprocess.run([cc, "-O2", "-Wall", "-o", tmp, src] + LIBS.get(name, []),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            raise BuildError(
                "cc failed on %s.c: %s" % (name, r.stdout.decode(errors="replace")[-500:])
            )
        os.replace(tmp, exe)  # atomic: two concurrent runs never see half a binary
        return exe
    raise BuildError("no writable cache directory for the C programs: %s" % last)


def cpu_times() -> Any:
    """{cpu index: (busy ticks, total ticks)} from /proc/stat, or {} elsewhere.

    Sampled around every measurement window: the share of CPU 0 and CPU 1 that
    went to *other* processes (this machine is shared) is the busy share minus
    what the server and the client say they used themselves.
    """
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                parts = line.split()
                vals = [int(x) for x in parts[1:9]]
                idle = vals[3] + vals[4]  # idle + iowait
                out[int(parts[0][3:])] = (sum(vals) - idle, sum(vals))
    except (OSError, ValueError):
        pass
    return out


def _busy_share(t0: Any, t1: Any, cpu: int | None) -> Any:
    if cpu not in t0 or cpu not in t1:
        return None
    busy = t1[cpu][0] - t0[cpu][0]
    total = t1[cpu][1] - t0[cpu][1]
    return busy / float(total) if total > 0 else None


def start_floor(transport: Any, addr: Any = None) -> Any:
    """Start the C echo floor server; returns (child, "port-or-path")."""
    argv = [build("echo_floor"), "-t", transport]
    if addr:
        argv += ["-a", addr]
    child = Child(argv, cpu=SERVER_CPU, name="echo_floor")
    try:
        _, where = child.expect("READY", 10)
    except ChildError:
        child.close()
        raise
    return child, where


def pingpong(
    transport: Any, addr: Any, size: int, conns: int, warm: float, secs: float, server: Any,
) -> Any:
    """Drive `server` (a Child speaking the control protocol) with ping-pong load.

    The server's CPU accounting is bracketed by the load generator's own
    "start"/"stop", i.e. only the measured window counts, not connection setup
    or warm-up.  Returns a dict of figures; raises ChildError with a reason.
    """
    if transport == "tls":  # its own program (OpenSSL), same options and output
        argv = [build("tls_loadgen"), "-a", addr]
    else:
        argv = [build("loadgen"), "-t", transport, "-a", addr]
    argv += ["-c", conns, "-s", size,
             "-w", "%.3f" % warm, "-d", "%.3f" % secs, "-T", "%.3f" % (warm + secs + 20)]
    with Child(argv, cpu=CLIENT_CPU, name="loadgen") as lg:
        def step(prefix: str, timeout: float) -> Any:
            try:
                return lg.expect((prefix, "error"), timeout)
            except ChildError as e:
                raise ChildError("load generator: %s" % e)

        what, rest = step("start", warm + 25)
        if what == "error":
            raise ChildError(rest)
        server.send("start")
        ticks0 = cpu_times()
        what, rest = step("stop", secs + 25)
        if what == "error":
            raise ChildError(rest)
        server.send("stop")
        ticks1 = cpu_times()
        what, rest = step("result", 10)
        if what == "error":
            raise ChildError(rest)
        res = _kv(rest)
        try:
            _, ru = server.expect("RUSAGE", 10)
        except ChildError as e:
            raise ChildError("server: %s" % e)
    fields = ru.split()
    ut, st, wall = (float(x) for x in fields[:3])
    preempt = float(fields[3]) if len(fields) > 3 else 0.0
    rt, csecs = res["rt"], res["secs"]
    if rt <= 0:
        raise ChildError("no round trip completed in %.1f s (server stalled)" % csecs)
    # Per-round-trip CPU from rates: the two windows are the same length but
    # a few ms apart, so rate x client-time-per-round-trip is the exact form.
    per_rt = csecs / rt / wall if wall > 0 else 0.0
    server_busy = (ut + st) / wall if wall > 0 else 0.0
    fig = {
        "rps": rt / csecs,
        "p50_us": res["p50_us"],
        "p99_us": res["p99_us"],
        "cpu_us": (ut + st) * per_rt * 1e6,
        "user_us": ut * per_rt * 1e6,
        "sys_us": st * per_rt * 1e6,
        "server_busy": server_busy,
        "client_busy": res["cpu"],
        # Preemptions per second of each side: a busy neighbour on the same
        # CPU shows up here long before it is visible in any other figure.
        "server_preempt_s": preempt / wall if wall > 0 else 0.0,
        "client_preempt_s": res.get("nivcsw", 0.0) / csecs if csecs > 0 else 0.0,
        "lost": res.get("lost", 0),
    }
    # Ticks are 10 ms: over a 0.5 s window this is good to a few per cent,
    # enough to tell "CPU 0 was shared with a test suite" from "it was not".
    # ("others_cpu0" is the server's CPU, "others_cpu1" the client's.)
    if SERVER_CPU == CLIENT_CPU:
        sides: tuple[tuple[Any, Any, str], ...] = (
            (SERVER_CPU, server_busy + res["cpu"], "others_cpu0"),)
    else:
        sides = ((SERVER_CPU, server_busy, "others_cpu0"), (CLIENT_CPU, res["cpu"], "others_cpu1"))
    for cpu, own, key in sides:
        share = _busy_share(ticks0, ticks1, cpu)
        if share is not None:
            fig[key] = max(0.0, share - own)
    return fig


def idle_connections(addr: Any, conns: int, timeout: float) -> Any:
    """Start a load generator holding `conns` idle TCP connections.

    Returns (child, seconds it took); the caller reads the server's RSS and then
    closes the child, which resets all the connections.
    """
    argv = [build("loadgen"), "-t", "tcp", "-a", addr, "-c", conns, "-i", "-T", "%.1f" % timeout]
    lg = Child(argv, cpu=CLIENT_CPU, name="loadgen")
    try:
        what, rest = lg.expect(("connected", "error"), timeout + 10)
    except ChildError as e:
        lg.close()
        raise ChildError("load generator: %s" % e)
    if what == "error":
        lg.close()
        raise ChildError(rest)
    return lg, float(_kv("n=" + rest).get("secs", 0.0))


def _kv(text: str) -> Any:
    out = {}
    for item in text.split():
        if "=" in item:
            k, v = item.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out
