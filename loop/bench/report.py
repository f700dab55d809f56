"""Turn raw samples into medians, and medians into a table, JSON and an SVG chart.

Medians with min-max rather than means: on a shared, noisy machine one slow
repetition must not move the figure, and the range shows how noisy it was.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from .loops import BASELINE, FLOOR

# When both sides use at least this share of their CPU, that side is the limit.
BUSY = 0.85
# Other processes using more than this share of our CPUs make a cell "noisy".
NOISY = 0.10


def _median(xs: Sequence[float]) -> Any:
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def baseline(loops: Any) -> Any:
    """asyncio when it is compared, else the first loop: ratios need one."""
    return BASELINE if BASELINE in loops else (list(loops) or [BASELINE])[0]


def summarize(runner: Any) -> Any:
    """{workload: {"meta": Workload, "loops": {loop: cell}}} in table order.

    A cell is {"ok": True, "n", "metrics": {name: {median,min,max,values}},
    "failed", "reason"} or {"ok": False, "reason"}.
    """
    res = runner.results
    loops = list(runner.loops)
    base = baseline(loops)
    out = {}
    for w in runner.workloads_all:
        if w.name not in res.samples and w.name not in res.errors:
            continue
        cells = {}
        names = loops + ([FLOOR] if w.family == "net" else [])
        for loop in names:
            key = ("floor:%s-%d" % (w.transport, w.size)) if loop == FLOOR else w.name
            samples = res.samples.get(key, {}).get(loop, [])
            errors = res.errors.get(key, {}).get(loop, [])
            if not samples and not errors:
                continue
            if not samples:
                cells[loop] = {"ok": False, "reason": errors[0], "failed": len(errors)}
                continue
            metrics = {}
            for m in samples[0]:
                vals = [s[m] for s in samples if isinstance(s.get(m), (int, float))]
                if vals:
                    metrics[m] = {"median": _median(vals), "min": min(vals), "max": max(vals),
                                  "values": vals}
            cell = {"ok": True, "n": len(samples), "metrics": metrics,
                    "failed": len(errors), "reason": errors[0] if errors else None}
            if "unit" in samples[0]:
                cell["unit"] = samples[0]["unit"]
            if w.family in ("net", "http"):
                cell["bound"] = _bound(metrics)
            cells[loop] = cell
        _add_ratios(w, cells, base)
        out[w.name] = {"meta": w, "loops": cells}
    return out


def _bound(m: Any) -> Any:
    """Which side limited the run: the server normally; "client" when the load
    generator, not the server, ran out of CPU (then only CPU per round trip
    still compares loops)."""
    sb = m.get("server_busy", {}).get("median", 0.0)
    cb = m.get("client_busy", {}).get("median", 0.0)
    if sb >= BUSY:
        return "server"
    if cb >= BUSY:
        return "client"
    return "latency"


def _add_ratios(w: Any, cells: Any, base_name: Any) -> None:
    """"vs" = the loop's figure relative to asyncio's, >1 meaning better, for
    the primary figure and for CPU per operation alike."""
    base = cells.get(base_name)
    if not base or not base.get("ok"):
        return
    bm = base["metrics"]
    for cell in cells.values():
        if not cell.get("ok"):
            continue
        m = cell["metrics"]
        v, b = m.get(w.metric, {}).get("median"), bm.get(w.metric, {}).get("median")
        if v and b:
            cell["vs"] = v / b if w.higher else b / v
        v, b = m.get("cpu_us", {}).get("median"), bm.get("cpu_us", {}).get("median")
        if v and b:
            cell["cpu_vs"] = b / v


# -- table ---------------------------------------------------------------------

def si(x: float) -> Any:
    if x is None:
        return "-"
    ax = abs(x)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if ax >= div:
            return "%.3g%s" % (x / div, suf)
    if ax >= 100:
        return "%.0f" % x
    if ax >= 10:
        return "%.1f" % x
    return "%.2f" % x


def _mm(metric: Any) -> Any:
    return "%s (%s-%s)" % (si(metric["median"]), si(metric["min"]), si(metric["max"]))


def table(summary: Any, notes: Any = (), base: Any = BASELINE) -> Any:
    """The human-readable table, one row per (workload, loop)."""
    head = ("workload", "loop", "result  median (min-max)", "p50/p99 us",
            "CPU us/op usr+sys", "x " + base, "CPU x " + base, "note")
    rows = []
    for name, entry in summary.items():
        w = entry["meta"]
        first = True
        row_note = getattr(w, "note", "")  # on the row's first figures
        for loop, cell in entry["loops"].items():
            wl = name if first else ""
            first = False
            if not cell.get("ok"):
                rows.append((wl, loop, "n/a (%s)" % cell["reason"], "", "", "", "", ""))
                continue
            m = cell["metrics"]
            unit = cell.get("unit", w.unit)
            result = "%s %s" % (_mm(m[w.metric]), unit)
            lat = ""
            if "p50_us" in m:
                lat = "%s/%s" % (si(m["p50_us"]["median"]), si(m["p99_us"]["median"]))
            cpu = ""
            if "cpu_us" in m:
                cpu = "%s (%s+%s)" % (si(m["cpu_us"]["median"]), si(m["user_us"]["median"]),
                                      si(m["sys_us"]["median"]))
            vs = ("%.2fx" % cell["vs"]) if "vs" in cell else ""
            cvs = ("%.2fx" % cell["cpu_vs"]) if "cpu_vs" in cell else ""
            note = [row_note] if row_note else []
            row_note = ""
            others = max(m.get("others_cpu0", {}).get("median", 0.0),
                         m.get("others_cpu1", {}).get("median", 0.0))
            if others >= NOISY:
                # Then "who saturated" says more about the neighbours than
                # about the loop; CPU per op is still the figure to read.
                note.append("noisy: other processes took %.0f%% of a CPU" % (others * 100))
            elif cell.get("bound") == "client":
                note.append("client-bound")
            elif cell.get("bound") == "latency":
                note.append("neither side saturated")
            if cell.get("failed"):
                note.append("%d run(s) failed: %s" % (cell["failed"], cell["reason"]))
            if m.get("lost", {}).get("median"):
                note.append("%d datagrams resent" % m["lost"]["median"])
            rows.append((wl, loop, result, lat, cpu, vs, cvs, "; ".join(note)))
    widths = [len(h) for h in head]
    for r in rows:
        for i, c in enumerate(r[:-1]):
            if not c.startswith("n/a"):
                widths[i] = max(widths[i], len(c))
    lines = []
    def fmt(r: Any) -> Any:
        return "  ".join(c.ljust(widths[i]) if i < len(r) - 1 else c
                         for i, c in enumerate(r)).rstrip()

    lines.append(fmt(head))
    lines.append(fmt(tuple("-" * x for x in widths)))
    prev_family = None
    for r in rows:
        if r[0] and prev_family is not None:
            fam = summary[r[0]]["meta"].family
            if fam != prev_family:
                lines.append("")
        if r[0]:
            prev_family = summary[r[0]]["meta"].family
        if r[2].startswith("n/a"):
            # An n/a reason may be long: let it run on past the columns.
            lines.append(("  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2]])).rstrip())
        else:
            lines.append(fmt(r))
    lines.extend(_calibration(summary))
    for n in notes:
        lines.append("note: " + n)
    return "\n".join(lines)


def _calibration(summary: Any) -> Any:
    """Tell whether the load generator could saturate the C floor: if it could
    not, the floor's rt/s is the client's ceiling and loops near it are capped."""
    out = []
    seen = set()
    for entry in summary.values():
        w = entry["meta"]
        floor = entry["loops"].get(FLOOR)
        if w.family != "net" or not floor or not floor.get("ok"):
            continue
        key = (w.transport, w.size)
        if key in seen:
            continue
        seen.add(key)
        m = floor["metrics"]
        cb = m["client_busy"]["median"]
        sb = m["server_busy"]["median"]
        ceiling = m["rps"]["median"]
        others = max(m.get("others_cpu0", {}).get("median", 0.0),
                     m.get("others_cpu1", {}).get("median", 0.0))
        if others >= NOISY:
            verdict = ("unreliable: other processes took %.0f%% of a CPU during the floor runs"
                       % (others * 100))
        elif floor.get("bound") == "server":
            verdict = "server-limited at the floor: the client drives more than any loop needs"
        elif floor.get("bound") == "client":
            verdict = ("client-limited: C floor server %.0f%% busy, client %.0f%%: loops near "
                       "this rt/s are capped by the client" % (sb * 100, cb * 100))
        else:
            verdict = "neither side saturated (server %.0f%%, client %.0f%%): latency-bound" % (
                sb * 100, cb * 100)
        near = [lp for lp, c in entry["loops"].items()
                if lp != FLOOR and c.get("ok") and c["metrics"]["rps"]["median"] >= 0.9 * ceiling]
        # Under noise the floor's rt/s is no ceiling at all: say nothing then.
        extra = ("; near the ceiling (compare CPU/rt instead): " + ", ".join(near)
                 if near and others < NOISY else "")
        out.append("calibration %s %d KiB: C floor %s rt/s, %s%s"
                   % (w.transport, w.size // 1024, si(ceiling), verdict, extra))
    if out:
        out.insert(0, "")
    return out


# -- JSON ----------------------------------------------------------------------

def versions(loops: Any) -> Any:
    """Installed versions of the loops compared, and uvcffi's git commit when
    it runs from a work tree: a figure is only as good as knowing what ran."""
    out: dict[str, Any] = {}
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return out
    for name in loops:
        if name == "asyncio":
            continue
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
        except Exception:
            pass
    if "uvcffi" in loops:
        here = os.path.dirname(os.path.abspath(__file__))
        try:
            r = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5)
            if r.returncode == 0 and r.stdout.strip():
                out["uvcffi"] = "%s (git %s)" % (out.get("uvcffi", "?"), r.stdout.decode().strip())
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def to_json(summary: Any, runner: Any, started: float, finished: float) -> Any:
    data = {
        "meta": {
            "started": started, "finished": finished,
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loops": list(runner.loops),
            "versions": versions(runner.loops),
            "retries": runner.retries,
            "baseline": baseline(runner.loops),
            "settings": runner.s.to_json(),
            "notes": list(runner.notes),
        },
        "workloads": {},
    }
    for name, entry in summary.items():
        cells = {}
        for loop, cell in entry["loops"].items():
            cells[loop] = {k: v for k, v in cell.items()}
        data["workloads"][name] = dict(entry["meta"].to_json(), loops=cells)
    return data


def write_json(path: str, data: bytes) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")


def now() -> Any:
    return datetime.datetime.now().isoformat(timespec="seconds")


# -- SVG -----------------------------------------------------------------------

COLORS = {"asyncio": "#8c8c8c", "uvloop": "#4c72b0", "uvcffi": "#dd8452"}
EXTRA_COLORS = ["#55a868", "#c44e52", "#8172b3"]


def _esc(s: str) -> Any:
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


FOOTNOTE = (
    "medians over the repetitions; network: server and C load generator on CPUs of their own; "
    "CPU = the server's own user+sys time per operation; n/a = the loop raised or stalled"
)


def svg(summary: Any, loops: Any, title: str) -> Any:
    """A dependency-free SVG: two panels of horizontal bars per workload,
    throughput and CPU per operation, both relative to the baseline loop
    (asyncio when compared) with >1 better."""
    base = baseline(loops)
    loops = [lp for lp in loops]
    colors = dict(COLORS)
    for i, lp in enumerate(lp for lp in loops if lp not in colors):
        colors[lp] = EXTRA_COLORS[i % len(EXTRA_COLORS)]
    names = [n for n, e in summary.items() if any(c.get("vs") for c in e["loops"].values())]
    bar, gap, label_w, panel_w, top = 11, 10, 210, 330, 70
    group_h = bar * len(loops) + gap
    height = top + group_h * max(1, len(names)) + 60
    width = label_w + 2 * panel_w + 60

    def vmax(key: str) -> Any:
        vals = [c.get(key, 0) for n in names for c in summary[n]["loops"].values()]
        m = max([v for v in vals if v] + [1.0])
        return min(m * 1.1, 50.0)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="10" y="20" font-size="15" font-weight="bold">%s</text>' % _esc(title)]
    # legend
    x = 10
    for lp in loops:
        out.append('<rect x="%d" y="30" width="12" height="12" fill="%s"/>' % (x, colors[lp]))
        out.append('<text x="%d" y="40">%s</text>' % (x + 16, _esc(lp)))
        x += 30 + 7 * len(lp)
    panels = [("vs", "throughput vs %s (higher is better)" % base),
              ("cpu_vs", "CPU per operation, %s / loop (higher is better)" % base)]
    for pi, (key, ptitle) in enumerate(panels):
        x0 = label_w + pi * (panel_w + 30)
        scale = (panel_w - 50) / vmax(key)
        out.append(
            '<text x="%d" y="%d" font-weight="bold">%s</text>' % (x0, top - 12, _esc(ptitle))
        )
        one = x0 + scale
        out.append(
            '<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333" stroke-dasharray="3,3"/>'
            % (one, top - 5, one, top + group_h * len(names))
        )
        out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#333">1x</text>'
                   % (one, top + group_h * len(names) + 14))
        for gi, name in enumerate(names):
            y = top + gi * group_h
            if pi == 0:
                out.append('<text x="%d" y="%d" text-anchor="end">%s</text>'
                           % (label_w - 10, y + group_h / 2.0, _esc(name)))
            cells = summary[name]["loops"]
            for li, lp in enumerate(loops):
                yy = y + li * bar
                cell = cells.get(lp)
                v = cell.get(key) if cell else None
                if not v:
                    why = "n/a" if cell and not cell.get("ok") else ""
                    if why:
                        out.append('<text x="%d" y="%d" fill="#999" font-size="9">%s</text>'
                                   % (x0 + 2, yy + bar - 2, why))
                    continue
                w = max(1.0, min(v, vmax(key)) * scale)
                out.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s">'
                           '<title>%s %s: %.2fx</title></rect>'
                           % (x0, yy, w, bar - 1, colors[lp], _esc(name), _esc(lp), v))
                out.append(
                    '<text x="%.1f" y="%d" font-size="9">%.2fx</text>'
                    % (x0 + w + 3, yy + bar - 2, v)
                )
    out.append(
        '<text x="10" y="%d" fill="#555" font-size="10">%s</text>' % (height - 10, _esc(FOOTNOTE))
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_plot(path: str, summary: Any, loops: Any, title: str) -> Any:
    """SVG by hand (no dependency).  A .png path is drawn with matplotlib when
    it is importable; otherwise the SVG is written next to it instead."""
    if path.lower().endswith(".png"):
        try:
            return _png(path, summary, loops, title)
        except ImportError:
            path = path[:-4] + ".svg"
    with open(path, "w") as f:
        f.write(svg(summary, loops, title))
    return path


def _png(path: str, summary: Any, loops: Any, title: str) -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n, e in summary.items() if any(c.get("vs") for c in e["loops"].values())]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(names) * max(1, len(loops)) / 2 + 2),
                             sharey=True)
    h = 0.8 / max(1, len(loops))
    base = baseline(loops)
    for ax, key, t in ((axes[0], "vs", "throughput vs " + base),
                       (axes[1], "cpu_vs", "CPU/op, %s / loop" % base)):
        for li, lp in enumerate(loops):
            vals = [summary[n]["loops"].get(lp, {}).get(key) or 0 for n in names]
            ax.barh([i + li * h for i in range(len(names))], vals, height=h, label=lp,
                    color=COLORS.get(lp))
        ax.axvline(1.0, color="k", ls="--", lw=0.8)
        ax.set_title(t + " (higher is better)")
    axes[0].set_yticks([i + h * (len(loops) - 1) / 2 for i in range(len(names))])
    axes[0].set_yticklabels(names)
    axes[0].invert_yaxis()
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return path
