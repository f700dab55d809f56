"""The benchmark gives PyPy children a sane GC nursery where PyPy would size it from a
cache no core has (loop/bench/__main__.py): a 240 MiB nursery stops a PyPy server for up
to 0.7 s per minor collection, which the benchmark reported as "server stalled"."""
import os
import platform

import pytest

from uvcffi.bench import __main__ as bench_main


def _as_pypy(monkeypatch, cache):
    monkeypatch.setattr(platform, "python_implementation", lambda: "PyPy")
    monkeypatch.setattr(bench_main, "_largest_cpu_cache", lambda: cache)
    monkeypatch.delenv("PYPY_GC_NURSERY", raising=False)


def test_a_huge_reported_cache_gets_a_nursery_and_a_note(monkeypatch):
    _as_pypy(monkeypatch, 480 << 20)
    note = bench_main._pypy_nursery_note()
    assert os.environ["PYPY_GC_NURSERY"] == bench_main._PYPY_NURSERY
    assert note is not None and "480 MiB" in note


def test_a_real_cache_or_a_users_setting_is_left_alone(monkeypatch):
    _as_pypy(monkeypatch, 32 << 20)
    assert bench_main._pypy_nursery_note() is None
    assert "PYPY_GC_NURSERY" not in os.environ
    _as_pypy(monkeypatch, 480 << 20)
    monkeypatch.setenv("PYPY_GC_NURSERY", "4M")
    assert bench_main._pypy_nursery_note() is None
    assert os.environ["PYPY_GC_NURSERY"] == "4M"


def test_cpython_is_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "python_implementation", lambda: "CPython")
    monkeypatch.setattr(bench_main, "_largest_cpu_cache", lambda: 480 << 20)
    assert bench_main._pypy_nursery_note() is None


def test_the_cache_size_is_read_from_sys():
    if not os.path.isdir("/sys/devices/system/cpu/cpu0/cache/index0"):
        pytest.skip("this machine's /sys lists no CPU caches")
    with open("/sys/devices/system/cpu/cpu0/cache/index0/size") as f:
        first = f.read().strip()
    assert bench_main._largest_cpu_cache() >= int(first.rstrip("KMG")) << 10
