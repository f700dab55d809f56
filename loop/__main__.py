"""python -m uvcffi [-m module | script.py] [args...]: run an asyncio program on uvcffi.

The program runs unchanged as __main__; asyncio.run() and asyncio.new_event_loop() inside
it create uvcffi loops.
"""
from __future__ import annotations

import os
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
        script = argv[0]
        if not os.path.exists(script):
            # python's own words and exit status for a script it cannot find
            print(f"{sys.executable}: can't open file {os.path.abspath(script)!r}: "
                  "[Errno 2] No such file or directory", file=sys.stderr)
            return 2
        sys.argv = argv
        _script_path(script)
        runpy.run_path(script, run_name="__main__")
    return 0


def _script_path(script: str) -> None:
    """Make sys.path what ``python script.py`` would have: ``python -m uvcffi`` put the
    current directory first, where python puts the script's directory (symlinks resolved);
    for a directory or zip file runpy puts the path itself.  (Under -P or -I python puts
    no current directory there, and sys.path stays as it is.)"""
    if not sys.path or os.path.abspath(sys.path[0]) != os.getcwd():
        return
    if os.path.isfile(script) and not _is_zip(script):
        sys.path[0] = os.path.dirname(os.path.realpath(script))
    else:
        del sys.path[0]


def _is_zip(path: str) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


if __name__ == "__main__":
    sys.exit(main())
