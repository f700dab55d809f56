"""The orchestrator: which workloads exist, and running them interleaved.

Order of a run (repeated N times, the loop order rotated each time so that no
loop is always measured first, i.e. always on the coolest or the noisiest part
of a noisy machine):

    for each workload group (one server kind, or the worker benchmarks, ...):
        for each loop: start its process, measure every workload of the group,
                       end the process.

One process per (loop, group) keeps a crash or a hang in one loop's code from
touching any other cell, and keeps every loop's process equally fresh.
"""
from __future__ import annotations

import fnmatch
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import httpbench, loadgen
from ._proc import Child, ChildError, python_module_argv
from .loops import FLOOR, describe


class Workload:
    """One row group of the table.

    family: "net" (a server process + the C load generator), "worker" (a
    benchmark inside one process per loop) or "mem" (idle connections).
    """

    def __init__(
        self, name: str, family: str, group: Any, metric: Any, unit: Any, higher: Any = True,
        kind: str | None = None, transport: Any = None, size: int | None = None, doc: Any = "",
    ) -> None:
        self.name, self.family, self.group = name, family, group
        self.metric, self.unit, self.higher = metric, unit, higher
        self.kind, self.transport, self.size, self.doc = kind, transport, size, doc
        self.note = ""  # what the row runs, when it depends on the machine (HTTP rows)

    def to_json(self) -> Any:
        return {"family": self.family, "metric": self.metric, "unit": self.unit,
                "higher_is_better": self.higher, "size": self.size,
                "transport": self.transport, "doc": self.doc, "note": self.note}


def _workloads() -> Any:
    out = []
    styles = [
        ("tcp-protocol", "tcp-protocol", "tcp", (1, 10, 100), "loop.create_server + Protocol"),
        (
            "tcp-buffered",
            "tcp-buffered",
            "tcp",
            (1, 10, 100),
            "loop.create_server + BufferedProtocol",
        ),
        ("tcp-streams", "tcp-streams", "tcp", (1, 10, 100), "asyncio.start_server streams"),
        ("tcp-sock", "tcp-sock", "tcp", (1, 10, 100), "loop.sock_accept/sock_recv/sock_sendall"),
        ("unix-protocol", "unix-protocol", "unix", (1,), "loop.create_unix_server + Protocol"),
        ("udp-pingpong", "udp", "udp", (1,), "loop.create_datagram_endpoint"),
        ("tls-protocol", "tls-protocol", "tls", (1, 10), "loop.create_server(ssl=) + Protocol"),
    ]
    for prefix, kind, transport, sizes, doc in styles:
        for k in sizes:
            out.append(Workload("%s-%dk" % (prefix, k), "net", prefix, "rps", "rt/s",
                                kind=kind, transport=transport, size=k * 1024,
                                doc="%s echo, %d KiB requests" % (doc, k)))
    out.extend(httpbench.workloads(Workload))
    for name, unit, doc in [
        ("sched-call_soon", "ops/s", "loop.call_soon, 100 self-rescheduling callbacks"),
        ("sched-call_later_cancel", "ops/s", "loop.call_later(3600) + cancel()"),
        ("sched-call_soon_threadsafe", "ops/s", "loop.call_soon_threadsafe from another thread"),
        ("sched-sleep0", "ops/s", "100 tasks chaining asyncio.sleep(0)"),
        ("sched-task_create", "ops/s", "loop.create_task of a trivial coroutine"),
        ("subproc-pipe", "MiB/s", "create_subprocess_exec(cat), 64 KiB writes, read back"),
        ("subproc-spawn", "spawns/s", "create_subprocess_exec(/bin/true) + wait, sequential"),
    ]:
        out.append(Workload(name, "worker", "worker", "value", unit, doc=doc))
    out.append(Workload("mem-idle-10k", "mem", "mem", "kib_per_conn", "KiB/conn", higher=False,
                        kind="tcp-protocol", transport="tcp", size=10000,
                        doc="server RSS growth per idle TCP connection, 10,000 connections"))
    return out


WORKLOADS = _workloads()


def select(patterns: Any) -> Any:
    """Workloads matching any of `patterns` (fnmatch globs; a bare word also
    matches as a prefix, so "tcp" means every tcp-* workload)."""
    if not patterns:
        return list(WORKLOADS)
    exact = set(w.name for w in WORKLOADS)
    chosen = []
    for w in WORKLOADS:
        for p in patterns:
            if p in exact:
                hit = w.name == p  # "sched-call_soon" is not also "..._threadsafe"
            else:
                hit = fnmatch.fnmatchcase(w.name, p) or w.name.startswith(p)
            if hit:
                chosen.append(w)
                break
    return chosen


class Settings:
    def __init__(
        self, quick: bool = False, reps: int | None = None, conns: int = 10,
        mem_conns: int = 10000,
    ) -> None:
        self.quick = quick
        self.reps = reps or (2 if quick else 5)
        # PyPy's JIT needs a longer warm-up before it runs the loop's hot
        # paths compiled; there is no uvloop there, so the run stays as short.
        jit = 2.0 if platform.python_implementation() == "PyPy" else 1.0
        self.warm = (0.2 if quick else 0.4) * jit      # per network measurement
        self.secs = 0.5 if quick else 1.5
        self.micro_warm = (0.15 if quick else 0.4) * jit
        self.micro_secs = 0.3 if quick else 1.0
        self.conns = conns
        self.mem_conns = mem_conns
        self.start_timeout = 60.0              # PyPy on a busy box starts slowly
        # A measurement during which other processes took a good share of our
        # CPUs is taken again (the least disturbed attempt is kept), but only
        # while the run is ahead of the pace that finishes within `budget`.
        self.noisy_retries = 1 if quick else 2
        self.budget = 140.0 if quick else 1050.0

    def to_json(self) -> Any:
        return dict(self.__dict__)


class Results:
    """samples[workload][loop] = [dict of figures per successful repetition];
    errors[workload][loop] = [reason per failed repetition]."""

    def __init__(self) -> None:
        self.samples: dict[Any, dict[str, list[Any]]] = {}
        self.errors: dict[Any, dict[str, list[str]]] = {}

    def add(self, wl: Any, loop: str, figures: Any) -> None:
        self.samples.setdefault(wl, {}).setdefault(loop, []).append(figures)

    def fail(self, wl: Any, loop: str, reason: str) -> None:
        self.errors.setdefault(wl, {}).setdefault(loop, []).append(reason)


class Runner:
    def __init__(self, loops: Any, workloads: Any, settings: Any, log: Any = None) -> None:
        self.loops = list(loops)
        self.workloads = list(workloads)
        self.workloads_all = list(workloads)  # for the report, even if some get skipped
        self.s = settings
        self.results = Results()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.tmp = tempfile.mkdtemp(prefix="uvcffi-bench-")
        self.notes: list[str] = []
        self._floor_done: set[Any] = set()
        self._t0 = time.monotonic()
        self._done_est = 0.0   # estimated seconds of the plan done so far
        self._plan_est = 1.0   # estimated seconds of the whole plan
        self.retries = 0

    # -- the plan -------------------------------------------------------------
    def groups(self) -> Any:
        seen = []
        for w in self.workloads:
            if w.group not in seen:
                seen.append(w.group)
        return [(g, [w for w in self.workloads if w.group == g]) for g in seen]

    # -- pacing -----------------------------------------------------------------
    def _cost(self, family: str) -> Any:
        """Rough seconds one measurement of `family` takes, for pacing only."""
        if family == "net":
            return self.s.warm + self.s.secs + 0.3
        if family == "worker":
            return self.s.micro_warm + self.s.micro_secs + 0.2
        if family == "http":
            return httpbench.cost(self.s)
        return 4.0

    def _plan(self) -> Any:
        est = 0.0
        floors = set()
        for _, wls in self.groups():
            for w in wls:
                est += self._cost(w.family) * len(self.loops)
                if w.family == "net" and (w.transport, w.size) not in floors:
                    floors.add((w.transport, w.size))
                    est += self._cost("net")
        return max(1.0, est * self.s.reps)

    def _may_retry(self) -> Any:
        """True while the run is ahead of the pace that ends within budget."""
        elapsed = time.monotonic() - self._t0
        return elapsed < self.s.budget * min(1.0, self._done_est / self._plan_est)

    def run(self) -> Any:
        try:
            self._preflight()
            self._plan_est = self._plan()
            for rep in range(self.s.reps):
                r = rep % len(self.loops)
                order = self.loops[r:] + self.loops[:r]
                for _group, wls in self.groups():
                    family = wls[0].family
                    if family == "net":
                        self._net_group(rep, order, wls)
                    elif family == "http":
                        httpbench.run_group(self, rep, order, wls)
                    elif family == "worker":
                        for loop in order:
                            self._worker(rep, loop, wls)
                    elif family == "mem":
                        for loop in order:
                            for w in wls:
                                self._mem(rep, loop, w)
        finally:
            from ._proc import close_all
            close_all()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.results

    def _preflight(self) -> None:
        """Build the C programs once, up front; without them the network and
        memory workloads are n/a (with the compiler's reason), the rest runs."""
        httpbench.preflight(self)  # wrk and the web frameworks, or the HTTP rows' reason
        if not any(w.family in ("net", "mem") for w in self.workloads):
            return
        if any(w.transport == "tls" for w in self.workloads):
            try:
                loadgen.build("tls_loadgen")
                self._make_cert()
            except Exception as e:
                reason = describe(e)
                self.notes.append("TLS workloads skipped: " + reason)
                self._drop([w for w in self.workloads if w.transport == "tls"], reason)
        try:
            loadgen.build("loadgen")
            loadgen.build("echo_floor")
        except Exception as e:
            reason = describe(e)
            self.notes.append("network workloads skipped: " + reason)
            self._drop([w for w in self.workloads if w.family in ("net", "mem")], reason)
        if loadgen.SERVER_CPU == loadgen.CLIENT_CPU:
            self.notes.append("only one CPU: server and load generator share it; "
                              "CPU per round trip is still valid, rt/s is not")

    def _drop(self, dropped: Any, reason: str) -> None:
        """Workloads that cannot run here: n/a (reason) in every cell."""
        for w in dropped:
            for loop in self.loops:
                for _ in range(self.s.reps):
                    self.results.fail(w.name, loop, reason)
        self.workloads = [w for w in self.workloads if w not in dropped]

    def _make_cert(self) -> None:
        """A throwaway self-signed certificate for the TLS servers (openssl's command)."""
        self.cert = os.path.join(self.tmp, "bench-cert.pem")
        self.key = os.path.join(self.tmp, "bench-key.pem")
        try:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", self.key, "-out", self.cert, "-subj", "/CN=localhost"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        except FileNotFoundError:
            raise RuntimeError("the openssl command (to make a certificate) is not installed")

    # -- network --------------------------------------------------------------
    def _start_server(self, loop: str, kind: str, transport: Any) -> Any:
        """Start the server for `loop`; returns (child, address for loadgen)."""
        path = os.path.join(self.tmp, "%s-%s.sock" % (loop.replace(" ", "_"), kind))
        if transport == "unix" and os.path.exists(path):
            os.unlink(path)
        if loop == FLOOR:
            child, where = loadgen.start_floor(transport, path if transport == "unix" else None)
        else:
            argv = python_module_argv("server", "--loop", loop, "--kind", kind,
                                      "--path", path, "--cpu", loadgen.SERVER_CPU)
            if transport == "tls":
                argv += ["--cert", self.cert, "--key", self.key]
            child = Child(argv, cpu=loadgen.SERVER_CPU, name="%s server" % loop)
            try:
                _, where = child.expect("READY", self.s.start_timeout)
            except ChildError:
                child.close()
                raise
        addr = where if transport == "unix" else "127.0.0.1:" + where
        return child, addr

    def _net_group(self, rep: int, order: Any, wls: Any) -> None:
        kind, transport = wls[0].kind, wls[0].transport
        # The C floor depends only on transport and size, not on the Python
        # style: measure it once per repetition and show it under every style.
        # (There is no C floor for TLS: the loops compare with one another.)
        floor_wls = [w for w in wls if (rep, transport, w.size) not in self._floor_done
                     and transport != "tls"]
        for loop in order + ([FLOOR] if floor_wls else []):
            todo = floor_wls if loop == FLOOR else wls
            server = None
            start_failed = None
            for w in todo:
                key = w.name if loop != FLOOR else self._floor_key(w)
                if start_failed:
                    # The server could not even start: don't pay its start-up
                    # timeout again for every size.
                    self.results.fail(key, loop, start_failed)
                    continue
                try:
                    if server is None or not server.alive():
                        if server is not None:
                            server.close()
                        try:
                            server, addr = self._start_server(loop, kind, transport)
                        except ChildError as e:
                            start_failed = "server did not start: %s" % e
                            server = None
                            raise ChildError(start_failed)
                    fig = self._pingpong(transport, addr, w, server)
                    self.results.add(key, loop, fig)
                    self.log("  [%d/%d] %-22s %-8s %9s rt/s  p99 %7.0f us  cpu %6.2f us/rt"
                             % (rep + 1, self.s.reps, w.name, loop, _si(fig["rps"]),
                                fig["p99_us"], fig["cpu_us"]))
                except Exception as e:  # a garbled line too: one cell, not the run
                    reason = self._why(e, server)
                    self.results.fail(key, loop, reason)
                    self.log(
                        "  [%d/%d] %-22s %-8s n/a (%s)"
                        % (rep + 1, self.s.reps, w.name, loop, reason)
                    )
                    # A failed run may leave the server wedged: fresh one next time.
                    if server is not None:
                        server.close()
                        server = None
                finally:
                    self._done_est += self._cost("net")
                    if loop == FLOOR:
                        self._floor_done.add((rep, transport, w.size))
            if server is not None:
                server.close()

    def _pingpong(self, transport: Any, addr: Any, w: Any, server: Any) -> Any:
        best = None
        for attempt in range(1 + self.s.noisy_retries):
            if attempt:
                self.retries += 1
            fig = loadgen.pingpong(transport, addr, w.size, self.s.conns,
                                   self.s.warm, self.s.secs, server)
            fig["attempts"] = attempt + 1
            if best is None or noise(fig) < noise(best):
                best = fig
            if noise(best) < RETRY_NOISE or not self._may_retry():
                break
        return best

    @staticmethod
    def _why(exc: Any, server: Any) -> Any:
        """The reason for an n/a cell: what the client saw, plus what the
        server said (an error its loop reported) or how it died."""
        reason = str(exc) if isinstance(exc, ChildError) else describe(exc)
        if server is not None:
            if server.notes:
                reason = "%s; server: %s" % (reason, server.notes[0])
            elif not server.alive() and server.name not in reason:
                time.sleep(0.1)  # let it finish writing its last stderr line
                reason = "%s; %s" % (reason, server.death())
        return reason

    @staticmethod
    def _floor_key(w: Any) -> Any:
        return "floor:%s-%d" % (w.transport, w.size)

    # -- in-process benchmarks -------------------------------------------------
    def _worker(self, rep: int, loop: str, wls: Any) -> None:
        got = self._run_worker(loop, [w.name for w in wls])
        self._done_est += self._cost("worker") * len(wls)
        for _ in range(self.s.noisy_retries):
            again = [n for n, r in got.items()
                     if "error" not in r and noise(r) >= RETRY_NOISE]
            if not again or not self._may_retry():
                break
            self.retries += len(again)
            for name, r in self._run_worker(loop, again).items():
                if "error" not in r and noise(r) < noise(got[name]):
                    got[name] = r
        for w in wls:
            r = got[w.name]
            if "error" in r:
                self.results.fail(w.name, loop, r["error"])
                self.log(
                    "  [%d/%d] %-26s %-8s n/a (%s)"
                    % (rep + 1, self.s.reps, w.name, loop, r["error"])
                )
            else:
                self.results.add(w.name, loop, r)
                self.log("  [%d/%d] %-26s %-8s %9s %s" % (rep + 1, self.s.reps, w.name, loop,
                                                          _si(r["value"]), r["unit"]))

    def _run_worker(self, loop: str, names: Any) -> Any:
        """{name: figures or {"error": reason}} for each of `names`, run in
        worker processes of `loop`; a hung or crashed benchmark costs only
        itself (the worker is restarted on the ones after it)."""
        out = {}
        remaining = list(names)
        # Generous against a slow machine, short against a loop that hangs:
        # each hang costs this much once per repetition.
        per_bench = 2 * (self.s.micro_warm + self.s.micro_secs) + 15
        while remaining:
            argv = python_module_argv("micro", "--loop", loop,
                                      "--secs", self.s.micro_secs, "--warm", self.s.micro_warm,
                                      "--cpu", loadgen.SERVER_CPU, *remaining)
            child = Child(argv, cpu=loadgen.SERVER_CPU, name="%s worker" % loop)
            current = None
            first = True
            try:
                while remaining:
                    _, rest = child.expect(
                        "RESULT", per_bench + (self.s.start_timeout if first else 0)
                    )
                    first = False
                    obj = json.loads(rest)
                    if obj.get("started"):
                        current = obj["name"]
                        continue
                    name = obj.pop("name")
                    out[name] = obj
                    if name in remaining:
                        remaining.remove(name)
                    current = None
            except Exception as e:
                why = str(e) if isinstance(e, ChildError) else describe(e)
                victims = [current] if current else list(remaining)
                for name in victims:
                    out[name] = {"error": why}
                    if name in remaining:
                        remaining.remove(name)
            finally:
                child.close()
        return out

    # -- memory per idle connection ----------------------------------------------
    def _mem(self, rep: int, loop: str, w: Any) -> None:
        conns = self.s.mem_conns
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = conns + 256
        if hard != resource.RLIM_INFINITY and hard < need:
            reason = ("skipped: RLIMIT_NOFILE hard limit is %d, %d connections need %d "
                      "(raise it with ulimit -Hn)" % (hard, conns, need))
            self.results.fail(w.name, loop, reason)
            if rep == 0 and loop == self.loops[0]:
                self.log("  " + reason)
            return
        server = lg = None
        self._done_est += self._cost("mem")
        try:
            server, addr = self._start_server(loop, w.kind, w.transport)
            server.send("rss")
            rss0 = int(server.expect("RSS", 10)[1])
            lg, secs = loadgen.idle_connections(addr, conns, timeout=60)
            time.sleep(0.3)  # let the loop finish creating the last protocols
            server.send("rss")
            rss1 = int(server.expect("RSS", 10)[1])
            fig = {"kib_per_conn": (rss1 - rss0) / 1024.0 / conns, "connect_s": secs,
                   "rss0_mib": rss0 / 2.0 ** 20}
            self.results.add(w.name, loop, fig)
            self.log("  [%d/%d] %-22s %-8s %6.2f KiB/conn (10k connected in %.2f s)"
                     % (rep + 1, self.s.reps, w.name, loop, fig["kib_per_conn"], secs))
        except Exception as e:
            reason = self._why(e, server)
            self.results.fail(w.name, loop, reason)
            self.log("  [%d/%d] %-22s %-8s n/a (%s)" % (rep + 1, self.s.reps, w.name, loop, reason))
        finally:
            if lg is not None:
                lg.close()
            if server is not None:
                server.close()


# Share of CPU 0 or 1 taken by other processes above which a measurement is
# taken again (when the run is ahead of its time budget).
RETRY_NOISE = 0.15


def noise(fig: Any) -> Any:
    return max(fig.get("others_cpu0", 0.0), fig.get("others_cpu1", 0.0))


def _si(x: float) -> Any:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return "%.3g%s" % (x / div, suf)
    return "%.3g" % x
