"""The benchmark gives PyPy children a sane GC nursery where PyPy's own choice is far off
(loop/bench/__main__.py): a 240 MiB nursery stops a PyPy server for up to 0.7 s per minor
collection ("server stalled" rows), and a 1 MiB one lets 100 KiB messages in flight
survive every minor collection, so that major collections run back to back."""
import os
import platform

import pytest

from uvcffi.bench import __main__ as bench_main


def _as_pypy(monkeypatch, nursery):
    monkeypatch.setattr(platform, "python_implementation", lambda: "PyPy")
    monkeypatch.setattr(bench_main, "_pypy_default_nursery", lambda: nursery)
    monkeypatch.delenv("PYPY_GC_NURSERY", raising=False)


@pytest.mark.parametrize("nursery, shown", [(240 << 20, "240.0 MiB"), (1 << 20, "1.0 MiB")])
def test_a_nursery_far_off_is_replaced_with_a_note(monkeypatch, nursery, shown):
    _as_pypy(monkeypatch, nursery)
    note = bench_main._pypy_nursery_note()
    assert os.environ["PYPY_GC_NURSERY"] == bench_main._PYPY_NURSERY
    assert note is not None and shown in note


@pytest.mark.parametrize("nursery", [8 << 20, 32 << 20, 64 << 20, 0])
def test_a_sane_or_unknown_nursery_is_left_alone(monkeypatch, nursery):
    _as_pypy(monkeypatch, nursery)
    assert bench_main._pypy_nursery_note() is None
    assert "PYPY_GC_NURSERY" not in os.environ


def test_a_users_setting_is_left_alone(monkeypatch):
    _as_pypy(monkeypatch, 1 << 20)
    monkeypatch.setenv("PYPY_GC_NURSERY", "4M")
    assert bench_main._pypy_nursery_note() is None
    assert os.environ["PYPY_GC_NURSERY"] == "4M"


def test_cpython_is_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "python_implementation", lambda: "CPython")
    monkeypatch.setattr(bench_main, "_pypy_default_nursery", lambda: 1 << 20)
    monkeypatch.delenv("PYPY_GC_NURSERY", raising=False)
    assert bench_main._pypy_nursery_note() is None
    assert "PYPY_GC_NURSERY" not in os.environ


@pytest.mark.skipif(platform.python_implementation() != "PyPy",
                    reason="only PyPy logs the nursery size it picks")
def test_pypy_says_which_nursery_it_picks(monkeypatch):
    monkeypatch.setenv("PYPY_GC_NURSERY", "3M")    # a user's setting must not hide PyPy's choice
    assert bench_main._pypy_default_nursery() > 64 << 10
