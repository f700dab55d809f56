"""Entry points: new_event_loop(), run(), EventLoopPolicy and install()."""
from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._loop import Loop

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """Return a new uvcffi event loop."""
    return Loop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An asyncio event loop policy whose new_event_loop() returns uvcffi loops."""

    def new_event_loop(self) -> Loop:
        return new_event_loop()


def install() -> None:
    """Make uvcffi the loop asyncio.run() and asyncio.new_event_loop() create.

    On Python 3.12+ prefer asyncio.run(main(), loop_factory=uvcffi.new_event_loop) or
    uvcffi.run(main()): event loop policies are deprecated from Python 3.14.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run the coroutine ``main`` on a new uvcffi loop and return its result, as
    asyncio.run() does: cancel what is left, close async generators and the default
    executor, then close the loop."""
    if asyncio._get_running_loop() is not None:
        # (before the Runner: 3.11's would create a loop, fail to run it and warn)
        raise RuntimeError("uvcffi.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        current = False
        try:
            with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
                # asyncio.run() makes its loop the current one (asyncio.get_event_loop()
                # from another thread, the policy's get_event_loop()); a Runner given a
                # loop factory does not.
                _set_event_loop(runner.get_loop())
                current = True
                return runner.run(main)
        finally:
            if current:
                _set_event_loop(None)
    return _run_before_311(main, debug)


def _set_event_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # from Python 3.14
        asyncio.set_event_loop(loop)


def _run_before_311(main: Coroutine[Any, Any, _T], debug: bool | None) -> _T:
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during uvcffi.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
