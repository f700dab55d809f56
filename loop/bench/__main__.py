"""python -m uvcffi.bench: uvcffi, asyncio, uvloop and rloop side by side.

    python -m uvcffi.bench [--quick] [--json FILE] [--plot FILE]
                           [--loops uvcffi,asyncio,uvloop,rloop] [--only WORKLOAD ...]

Runs on the interpreter it is started with (CPython or PyPy); every server and
worker process uses that same interpreter.  See runner.py for the order of
runs and report.py for how figures are summarized.
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from typing import Any

from . import loops as loops_mod
from . import report
from .loadgen import CLIENT_CPU, SERVER_CPU
from .runner import WORKLOADS, Runner, Settings, select


def parse_args(argv: list[str] | None) -> Any:
    ap = argparse.ArgumentParser(
        prog="python -m uvcffi.bench",
        description="Benchmark uvcffi against asyncio, uvloop and rloop, interleaved, "
        "on this interpreter.",
    )
    ap.add_argument("--quick", action="store_true",
                    help="2 repetitions of short runs instead of 5")
    ap.add_argument("--json", metavar="FILE", help="write all figures as JSON")
    ap.add_argument("--plot", metavar="FILE",
                    help="write a bar chart normalized to asyncio (.svg; .png needs matplotlib)")
    ap.add_argument(
        "--loops",
        default=None,
        help="comma-separated loops (default: uvcffi, asyncio, and uvloop and rloop where "
        "they import)",
    )
    ap.add_argument("--only", nargs="+", metavar="WORKLOAD",
                    help="workloads to run: names, globs (tcp-*-1k) or prefixes (tcp, sched, http)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 5, --quick 2)")
    ap.add_argument("--conns", type=int, default=10,
                    help="connections of the ping-pong load generator (default 10)")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    return ap.parse_args(argv)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# PyPy sizes its GC nursery from the largest CPU cache it finds in /sys (half of it).  Some
# virtual machines report a cache no core has (this one: a 480 MiB L3), which gives a
# 240 MiB nursery: each minor collection then copies ~240 MiB of survivors and stops the
# process for up to 0.7 s, seen as "server stalled" rows and GiBs of RSS on PyPy, whatever
# the loop.  Above this cache size the children of a PyPy run get PYPY_GC_NURSERY, as
# PyPy's documentation suggests, unless it is set already; the notes say so.
_PYPY_SANE_CACHE = 64 << 20
_PYPY_NURSERY = "16M"


def _largest_cpu_cache() -> int:
    """Bytes of the largest cache of CPU 0 that /sys reports (0 if none)."""
    largest = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = os.listdir(base)
    except OSError:
        return 0
    for entry in entries:
        try:
            with open(os.path.join(base, entry, "size")) as f:
                text = f.read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            largest = max(largest, int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return largest


def _pypy_nursery_note() -> str | None:
    """Set PYPY_GC_NURSERY for the children when PyPy would size it from a huge cache."""
    if platform.python_implementation() != "PyPy" or "PYPY_GC_NURSERY" in os.environ:
        return None
    cache = _largest_cpu_cache()
    if cache <= _PYPY_SANE_CACHE:
        return None
    os.environ["PYPY_GC_NURSERY"] = _PYPY_NURSERY
    return ("PYPY_GC_NURSERY=%s for the PyPy children: PyPy would take half of the %d MiB "
            "cache this machine reports, whose minor collections stop a process for up to "
            "0.7 s" % (_PYPY_NURSERY, cache >> 20))


def main(argv: list[str] | None = None) -> Any:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for w in WORKLOADS:
            print("%-28s %s" % (w.name, w.doc))
        return 0
    if args.loops:
        names = [n.strip() for n in args.loops.split(",") if n.strip()]
        bad = [n for n in names if n not in loops_mod.ALL]
        if bad:
            print("unknown loop(s): %s (known: %s)" % (", ".join(bad), ", ".join(loops_mod.ALL)),
                  file=sys.stderr)
            return 2
    else:
        skipped: dict[str, str] = {}
        names = loops_mod.default_loops(skipped)
        for loop, why in skipped.items():
            print("%s is left out on %s %s: %s" % (loop, platform.python_implementation(),
                                                   platform.python_version(), why),
                  file=sys.stderr)
    # The baseline goes first so that the table reads "asyncio, then the others".
    if loops_mod.BASELINE in names:
        names.remove(loops_mod.BASELINE)
        names.insert(0, loops_mod.BASELINE)
    workloads = select(args.only)
    if not workloads:
        print("no workload matches %s; see --list" % " ".join(args.only), file=sys.stderr)
        return 2
    if args.conns < 1 or (args.repeat is not None and args.repeat < 1):
        print("--conns and --repeat must be at least 1", file=sys.stderr)
        return 2
    settings = Settings(quick=args.quick, reps=args.repeat, conns=args.conns)
    nursery_note = _pypy_nursery_note()

    # The orchestrator only waits on pipes; keep it off the server's CPU.
    if hasattr(os, "sched_setaffinity") and CLIENT_CPU != SERVER_CPU:
        try:
            os.sched_setaffinity(0, {CLIENT_CPU})
        except OSError:
            pass

    print("uvcffi.bench on %s %s: loops %s; %d workloads x %d repetitions%s"
          % (platform.python_implementation(), platform.python_version(), ", ".join(names),
             len(workloads), settings.reps, " (quick)" if args.quick else ""), file=sys.stderr)
    # SIGTERM takes the same way out as Ctrl-C, through the finally blocks
    # that end every child process this run started.
    signal.signal(signal.SIGTERM, _on_sigterm)
    runner = Runner(names, workloads, settings)
    if nursery_note:
        runner.notes.append(nursery_note)
    started = report.now()
    t0 = time.monotonic()
    interrupted = False
    try:
        runner.run()
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: reporting what was measured", file=sys.stderr)
    elapsed = time.monotonic() - t0
    summary = report.summarize(runner)
    title = "uvcffi.bench, %s %s, %s" % (platform.python_implementation(),
                                         platform.python_version(), started)
    # Files first: a closed stdout (| head) must not cost the JSON.
    if args.json:
        report.write_json(args.json, report.to_json(summary, runner, started, report.now()))
        print("json: %s" % args.json, file=sys.stderr)
    if args.plot:
        path = report.write_plot(args.plot, summary, names, title)
        print("plot: %s" % path, file=sys.stderr)
    notes = list(runner.notes)
    if any(w.family in ("net", "mem") for w in workloads):
        notes.append("server CPU %d, C load generator CPU %d, %d connections, %s s windows"
                     % (SERVER_CPU, CLIENT_CPU, settings.conns, settings.secs))
    notes.append("%d repetitions, medians (min-max); %d noisy measurements retaken; total %.0f s"
                 % (settings.reps, runner.retries, elapsed))
    print()
    print(title)
    print("versions: " + ", ".join("%s %s" % kv for kv in report.versions(names).items()))
    print(report.table(summary, notes, report.baseline(names)))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
