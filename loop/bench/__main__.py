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
import re
import signal
import subprocess
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


# PyPy sizes its GC nursery from the CPU caches it finds, and on virtual machines the
# choice can be far off.  The Intel VM reported a 480 MiB L3 no core has, which gave a
# 240 MiB nursery: each minor collection copied ~240 MiB of survivors and stopped the
# process for up to 0.7 s ("server stalled" rows, GiBs of RSS).  The AMD VM gives 1 MiB,
# smaller than the ~1 MB of 100 KiB messages ten connections keep in flight: they survive
# every minor collection, and major-collection marking took 43 % of a sock-100k server's
# time.  Ten live 100 KiB objects replaced in a ring cost, per allocation, 79-95 us with a
# 1 MiB nursery, 40 with 2, 24 with 4, 19 with 8, 17 with 16 and 19 with 64 MiB.  Outside
# this range the children of a PyPy run get PYPY_GC_NURSERY, as PyPy's documentation
# suggests, unless it is set already; the notes say so.  8 MiB rather than 16: every
# message's bytes are written into fresh nursery memory, which a smaller nursery keeps
# warmer in the caches.  On the Intel VM (2026-12-06, uvcffi's server user us per round
# trip, protocol 1k/10k/100k, sock_* 1k/10k/100k): 8 MiB 0.50/0.97/6.09, 2.91/3.35/15.3;
# 16 MiB 0.68/1.49/7.20, 3.35/4.05/13.0; 4 MiB 0.58/0.97/6.53, 2.97/3.76/39.3.
_PYPY_SANE_NURSERY = (8 << 20, 64 << 20)
_PYPY_NURSERY = "8M"


def _pypy_default_nursery() -> int:
    """Bytes of the nursery this PyPy picks on this machine (0 if it does not say)."""
    env = dict(os.environ, PYPYLOG="gc-set-nursery-size:-")
    env.pop("PYPY_GC_NURSERY", None)
    try:
        out = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True,
                             text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return 0
    # PyPy logs a provisional size at start-up and then the one it keeps.
    sizes = re.findall(r"nursery size: (\d+)", out)
    return int(sizes[-1]) if sizes else 0


def _pypy_nursery_note() -> str | None:
    """Set PYPY_GC_NURSERY for the children when PyPy's own choice is far off."""
    if platform.python_implementation() != "PyPy" or "PYPY_GC_NURSERY" in os.environ:
        return None
    chosen = _pypy_default_nursery()
    low, high = _PYPY_SANE_NURSERY
    if not chosen or low <= chosen <= high:
        return None
    os.environ["PYPY_GC_NURSERY"] = _PYPY_NURSERY
    why = ("whose minor collections stop a process for up to 0.7 s" if chosen > high else
           "which 100 KiB messages in flight outlive, so that major collections run back "
           "to back")
    return ("PYPY_GC_NURSERY=%s for the PyPy children: PyPy would take a %.1f MiB nursery "
            "on this machine, %s" % (_PYPY_NURSERY, chosen / (1 << 20), why))


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
