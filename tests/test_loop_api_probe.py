"""The loop API's corners, each side by side with asyncio's loop (the anyloop fixture)."""
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
