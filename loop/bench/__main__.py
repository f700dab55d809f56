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
