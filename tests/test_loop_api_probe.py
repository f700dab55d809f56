"""The loop API's corners, each side by side with what asyncio (or python) does."""
import contextvars
import gc
import subprocess
import sys

import pytest


def test_scheduling_arguments_bind_by_keyword(anyloop):
    # asyncio's call_soon(callback, *args, context=None) and call_later(delay, callback, ...)
    # are plain Python signatures: their leading arguments may be passed by keyword.
    out = []
    anyloop.call_soon(callback=lambda: out.append("soon"))
    anyloop.call_soon_threadsafe(callback=lambda: out.append("threadsafe"))
    anyloop.call_later(delay=0, callback=lambda: out.append("later"))
    anyloop.call_later(0, callback=lambda: out.append("later, context"), context=None)
    anyloop.call_at(when=anyloop.time(), callback=lambda: out.append("at"))
    anyloop.call_later(0.001, anyloop.stop)
    anyloop.run_forever()
    assert out == ["soon", "threadsafe", "later", "later, context", "at"]


@pytest.mark.parametrize("call", [
    lambda lp: lp.call_soon(),
    lambda lp: lp.call_soon_threadsafe(context=None),
    lambda lp: lp.call_later(1),
    lambda lp: lp.call_at(),
    lambda lp: lp.call_soon(print, context=None, callback=print),
    lambda lp: lp.call_later(1, print, foo=1),
])
def test_scheduling_calls_that_do_not_bind_raise_type_error(anyloop, call):
    with pytest.raises(TypeError, match="argument"):
        call(anyloop)


def _run_python(*args, cwd):
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                         timeout=60, cwd=cwd)
    return out.returncode, out.stdout, out.stderr


def test_python_m_uvcffi_script_gets_the_sys_path_python_gives_it(tmp_path):
    # python app.py puts the script's directory first, never the current directory
    # (python -m does): a module next to where the user stands must not become importable.
    app = tmp_path / "sub" / "app.py"
    app.parent.mkdir()
    app.write_text("import sys\nprint(repr(sys.path))\n")
    plain = _run_python(str(app), cwd=tmp_path)
    on_uvcffi = _run_python("-m", "uvcffi", str(app), cwd=tmp_path)
    assert plain[0] == on_uvcffi[0] == 0, on_uvcffi[2]
    assert on_uvcffi[1] == plain[1]


def test_python_m_uvcffi_missing_script_exits_as_python_does(tmp_path):
    plain = _run_python("missing.py", cwd=tmp_path)
    on_uvcffi = _run_python("-m", "uvcffi", "missing.py", cwd=tmp_path)
    assert on_uvcffi[0] == plain[0] == 2
    assert "can't open file" in on_uvcffi[2] and "Traceback" not in on_uvcffi[2]


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="context= is asyncio's from 3.11")
def test_create_task_context_before_311_is_refused_as_asyncio_refuses_it(anyloop, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    async def work():
        return 1

    coro = work()
    with pytest.raises(TypeError, match="context"):
        anyloop.create_task(coro, context=contextvars.copy_context())
    assert anyloop.run_until_complete(coro) == 1  # still the caller's, untouched
    del coro
    gc.collect()
    assert unraisable == []
