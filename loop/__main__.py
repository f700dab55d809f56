"""python -m uvcffi [-m module | script.py] [args...]: run an asyncio program on uvcffi.

The program runs unchanged as __main__; asyncio.run() and asyncio.new_event_loop() inside
it create uvcffi loops.
"""
from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

from ._policy import install

USAGE = "usage: python -m uvcffi [-m module | script.py] [args ...]"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
