"""Print the README's benchmark table (markdown) from the JSON files tools/bench.sh writes.

    python tools/bench_table.py [bench-results/cpython.json] [bench-results/pypy.json]

Network rows give the server's user / sys CPU µs per round trip, HTTP rows req/s and CPU µs
per request, the others their own unit; every figure is the run's median.
"""
from __future__ import annotations

import json
import sys
from typing import Any

COLUMNS = [("cpython", "uvcffi", "CPython: uvcffi"), ("cpython", "uvloop", "uvloop"),
           ("cpython", "rloop", "rloop"), ("cpython", "asyncio", "asyncio"),
           ("pypy", "uvcffi", "PyPy: uvcffi"), ("pypy", "asyncio", "asyncio")]


def sig(x: float) -> str:
    """Three significant figures, with k or M, as the README has them."""
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    if x >= 1e3:
        return f"{x / 1e3:.3g}k"
    return f"{x:.3g}"


def cell(workload: dict[str, Any], loop: str) -> str:
    run = workload["loops"].get(loop)
    if not run or not run.get("ok"):
        return "n/a"
    m = run["metrics"]
    if workload["family"] == "net":
        return f"{m['user_us']['median']:.3g} / {m['sys_us']['median']:.3g}"
    if workload["family"] == "http":
        return f"{m['rps']['median']:.0f} ({m['cpu_us']['median']:.3g})"
    metric = workload["metric"]
    value = m[metric]["median"]
    if workload["unit"] == "ops/s":
        return sig(value)
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def unit(workload: dict[str, Any]) -> str:
    if workload["family"] == "net":
        return "µs user / sys per round trip"
    if workload["family"] == "http":
        return "req/s (CPU µs per request)"
    return str(workload["unit"])


def main(argv: list[str]) -> None:
    paths = {"cpython": argv[0] if argv else "bench-results/cpython.json",
             "pypy": argv[1] if len(argv) > 1 else "bench-results/pypy.json"}
    runs = {name: json.load(open(path))["workloads"] for name, path in paths.items()}
    print("| workload | unit | " + " | ".join(c[2] for c in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, workload in runs["cpython"].items():
        cells = [cell(runs[rt].get(name, {"loops": {}}), loop) if name in runs[rt] else "n/a"
                 for rt, loop, _ in COLUMNS]
        print(f"| {name} | {unit(workload)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
