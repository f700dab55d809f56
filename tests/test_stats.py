"""loop.stats() and uvcffi.instrument(): real values from a real loop."""
import asyncio
import sys
import time

import pytest

import uvcffi


async def _echo_once(loop, payload):
    async def handle(reader, writer):
        writer.write(await reader.readexactly(len(payload)))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    writer.write(payload)
    assert await reader.readexactly(len(payload)) == payload
    writer.close()
    server.close()
    await server.wait_closed()


def test_stats_count_what_the_loop_did(loop):
    before = loop.stats()
    loop.run_until_complete(_echo_once(loop, b"x" * 5000))
    after = loop.stats()
    assert after["iterations"] > before["iterations"]
    assert after["callbacks_run"] > before["callbacks_run"]
    # Both ends ran on this loop: 5000 bytes each way.
    assert after["bytes_read"] - before["bytes_read"] == 10000
    assert after["bytes_written"] - before["bytes_written"] == 10000
    assert after["events"]["accept"] == 1
    # Streams are read in read-into mode (one "readable" event per read here); the TLS
    # layer's reads come through the arena ("read").
    events = after["events"]
    assert events.get("read", 0) + events.get("readable", 0) >= 2
    assert after["ready"] == 0


def test_stats_see_handles_timers_and_the_ready_queue(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        timers = [loop.call_later(100, print) for _ in range(5)]
        timers[0].cancel()
        loop.call_soon(print)
        loop.call_soon(print)
        stats = loop.stats()
        server.close()
        for t in timers:
            t.cancel()
        return stats

    stats = loop.run_until_complete(main())
    assert stats["timers"] == 4
    assert stats["ready"] == 2
    assert stats["handles"].get("Listener") == 1


def test_an_idle_loop_shows_idle_time_and_a_busy_one_does_not(loop):
    loop.stats()
    loop.run_until_complete(asyncio.sleep(0.3))
    idle = loop.stats()
    assert idle["idle_time"] >= 0.2
    assert idle["utilization"] < 0.5

    async def busy():
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            await asyncio.sleep(0)  # one iteration after another, no waiting

    loop.run_until_complete(busy())
    assert loop.stats()["utilization"] > 0.5


def test_slow_callbacks_are_counted_outside_debug_mode(loop):
    assert not loop.get_debug()
    loop.slow_callback_duration = 0.05
    loop.run_until_complete(asyncio.sleep(0))
    before = loop.stats()["slow_callbacks"]
    loop.call_soon(time.sleep, 0.08)
    loop.run_until_complete(asyncio.sleep(0.01))
    stats = loop.stats()
    assert stats["slow_callbacks"] == before + 1
    start, duration = stats["slow_recent"][-1]
    assert duration >= 0.05
    assert start <= loop.time()
    # The time between runs of the loop is nobody's callback.
    time.sleep(0.08)
    loop.run_until_complete(asyncio.sleep(0))
    assert loop.stats()["slow_callbacks"] == before + 1


def test_stats_on_a_closed_loop_raise(loop):
    loop.close()
    with pytest.raises(RuntimeError):
        loop.stats()


def test_instrument_without_opentelemetry_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match="opentelemetry-api"):
        uvcffi.instrument()


def test_importing_uvcffi_imports_no_opentelemetry():
    import subprocess

    code = "import sys, uvcffi; print('opentelemetry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_instrument_exports_metrics_and_slow_callback_spans(loop):
    sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics",
                                      reason="opentelemetry-sdk is not installed")
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader = InMemoryMetricReader()
    meter_provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation = uvcffi.instrument(meter_provider, tracer_provider)
    try:
        loop.slow_callback_duration = 0.05
        loop.run_until_complete(_echo_once(loop, b"y" * 3000))
        loop.call_soon(time.sleep, 0.08)
        loop.run_until_complete(asyncio.sleep(0.01))
        data = reader.get_metrics_data()
    finally:
        instrumentation.uninstrument()

    mine = {"uvcffi.loop.id": id(loop)}
    values = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    attrs = dict(point.attributes)
                    if attrs.pop("uvcffi.loop.id") == id(loop):
                        values[(metric.name, tuple(sorted(attrs.items())))] = point.value
    assert values[("uvcffi.loop.io", (("direction", "read"),))] == 6000
    assert values[("uvcffi.loop.io", (("direction", "write"),))] == 6000
    assert values[("uvcffi.loop.slow_callbacks", ())] == 1
    assert values[("uvcffi.loop.iterations", ())] > 0
    assert values[("uvcffi.loop.events", (("kind", "accept"),))] == 1
    assert 0.0 <= values[("uvcffi.loop.utilization", ())] <= 1.0
    spans = [s for s in exporter.get_finished_spans()
             if s.attributes.get("uvcffi.loop.id") == mine["uvcffi.loop.id"]]
    assert [s.name for s in spans] == ["uvcffi.slow_callback"]
    assert spans[0].end_time - spans[0].start_time >= 50_000_000
