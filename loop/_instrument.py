"""uvcffi.instrument(): the loops' stats() as OpenTelemetry metrics, slow callbacks as spans.

Only imported when called, and it imports opentelemetry-api only then: uvcffi itself never
depends on it.  Every uvcffi loop alive in the process is reported (attribute
``uvcffi.loop.id``), read when the metric reader collects (typically every 60 s, or as the
SDK is configured): one stats() call per loop per collection, a few microseconds each.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable

from . import _core

if TYPE_CHECKING:
    from ._core import CoreLoop

# opentelemetry is optional (and its meters, tracers and observations are Any here).
_Pick = Callable[[dict[str, Any]], Iterable[tuple[float, dict[str, str]]]]

_EVENT_COUNTER = "uvcffi.loop.events"


class Instrumentation:
    """What instrument() set up; ``uninstrument()`` stops reporting."""

    def __init__(self, meter: Any, tracer: Any) -> None:
        self._tracer = tracer
        self._active = True
        # loop -> slow iterations reported
        self._slow_seen: weakref.WeakKeyDictionary[CoreLoop, int] = weakref.WeakKeyDictionary()
        # (collection time, [(loop, stats)]): one stats() per collection
        self._cache: tuple[float, list[tuple[CoreLoop, dict[str, Any]]]] | None = None
        self._instruments: list[Any] = []

        def counter(name: str, unit: str, description: str, pick: _Pick) -> None:
            self._instruments.append(meter.create_observable_counter(
                name, callbacks=[self._observer(pick)], unit=unit, description=description))

        def gauge(name: str, unit: str, description: str, pick: _Pick) -> None:
            self._instruments.append(meter.create_observable_gauge(
                name, callbacks=[self._observer(pick)], unit=unit, description=description))

        counter("uvcffi.loop.iterations", "{iteration}", "Loop iterations",
                lambda s: [(s["iterations"], {})])
        counter(_EVENT_COUNTER, "{event}", "libuv events dispatched, by kind",
                lambda s: [(n, {"kind": k}) for k, n in s["events"].items()])
        counter("uvcffi.loop.callbacks", "{callback}", "Callbacks run (ready queue, timers)",
                lambda s: [(s["callbacks_run"], {})])
        counter("uvcffi.loop.idle_time", "s", "Time spent waiting in the poll",
                lambda s: [(s["idle_time"], {})])
        counter("uvcffi.loop.slow_callbacks", "{iteration}",
                "Iterations whose callbacks ran longer than slow_callback_duration",
                lambda s: [(s["slow_callbacks"], {})])
        counter("uvcffi.loop.io", "By", "Bytes read and written by the loop's transports",
                lambda s: [(s["bytes_read"], {"direction": "read"}),
                           (s["bytes_written"], {"direction": "write"})])
        gauge("uvcffi.loop.ready", "{callback}", "Callbacks waiting in the ready queue",
              lambda s: [(s["ready"], {})])
        gauge("uvcffi.loop.timers", "{timer}", "Timers scheduled",
              lambda s: [(s["timers"], {})])
        gauge("uvcffi.loop.handles", "{handle}", "Live libuv handles, by kind",
              lambda s: [(n, {"kind": k}) for k, n in s["handles"].items()])
        gauge("uvcffi.loop.utilization", "1", "Busy share of the time since the last collection",
              lambda s: [(s["utilization"], {})])

    def _snapshot(self) -> list[tuple[CoreLoop, dict[str, Any]]]:
        # Every instrument's callback runs in one collection: stats() once per loop for all.
        now = time.monotonic()
        cache = self._cache
        if cache is not None and now - cache[0] < 0.5:
            return cache[1]
        taken = []
        for loop in list(_core._live_loops):
            if loop.is_closed():
                continue
            try:
                taken.append((loop, loop.stats()))
            except RuntimeError:
                continue  # closed meanwhile
        self._cache = (now, taken)
        self._export_slow(taken)
        return taken

    def _observer(self, pick: _Pick) -> Callable[[Any], list[Any]]:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> list[Any]:
            if not self._active:
                return []
            out = []
            for loop, stats in self._snapshot():
                loop_id = {"uvcffi.loop.id": id(loop)}
                for value, attrs in pick(stats):
                    out.append(Observation(value, {**loop_id, **attrs}))
            return out

        return observe

    def _export_slow(self, taken: list[tuple[CoreLoop, dict[str, Any]]]) -> None:
        """A span per slow iteration not reported yet (the last 64 of each loop)."""
        if self._tracer is None:
            return
        wall_minus_mono = time.time() - time.monotonic()
        for loop, stats in taken:
            seen = self._slow_seen.get(loop, 0)
            total = stats["slow_callbacks"]
            recent = stats["slow_recent"]
            for start, duration in recent[max(0, len(recent) - (total - seen)):]:
                start_ns = int((start + wall_minus_mono) * 1e9)
                span = self._tracer.start_span(
                    "uvcffi.slow_callback", start_time=start_ns,
                    attributes={"uvcffi.loop.id": id(loop), "duration_s": duration,
                                "slow_callback_duration": float(loop.slow_callback_duration)})
                span.end(end_time=start_ns + int(duration * 1e9))
            self._slow_seen[loop] = total

    def uninstrument(self) -> None:
        """Stop reporting (the instruments stay registered but observe nothing)."""
        self._active = False


def instrument(meter_provider: Any = None, tracer_provider: Any = None) -> Instrumentation:
    """Export every uvcffi loop's stats() as OpenTelemetry metrics, and each slow
    iteration (callbacks running longer than slow_callback_duration) as a span named
    ``uvcffi.slow_callback``.  Uses the global providers unless given.  Needs the
    ``opentelemetry-api`` package (and an SDK to send anything anywhere)."""
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        raise ImportError("uvcffi.instrument() needs opentelemetry-api: "
                          "pip install opentelemetry-api opentelemetry-sdk") from None
    from . import __version__

    meter = (meter_provider or metrics.get_meter_provider()).get_meter("uvcffi", __version__)
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("uvcffi", __version__)
    return Instrumentation(meter, tracer)
