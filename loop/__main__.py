"""python -m uvcffi [-c command | -m module | script.py] [args...]: run an asyncio program
on uvcffi.

The program runs unchanged as __main__; asyncio.run() and asyncio.new_event_loop() inside
it create uvcffi loops.
"""
from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence

from ._policy import install

USAGE = "usage: python -m uvcffi [-c command | -m module | script.py] [args ...]"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    install()
    if argv[0] in ("-c", "-m"):
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        if argv[0] == "-c":
            sys.argv = ["-c"] + argv[2:]
            _run_command(argv[1])
        else:
            sys.argv = argv[1:]
            _run_as_main(argv[1], alter_argv=True)
    else:
        script = argv[0]
        if not os.path.exists(script):
            # python's own words and exit status for a script it cannot find (PyPy's
            # leave the path unquoted)
            path = os.path.abspath(script)
            if sys.implementation.name != "pypy":
                path = repr(path)
            print(f"{sys.executable}: can't open file {path}: "
                  "[Errno 2] No such file or directory", file=sys.stderr)
            return 2
        sys.argv = argv
        _script_path(script)
        if not os.path.isfile(script) or _is_zip(script):
            _run_as_main("__main__", alter_argv=False)  # the __main__.py sys.path[0] has
        elif not _is_bytecode(script):
            _run_source(script)
        else:
            runpy.run_path(script, run_name="__main__")
    return 0


def _run_command(command: str) -> None:
    """Run ``command`` as ``python -c`` does: as a new __main__ module (no __file__, a
    BuiltinImporter as __loader__) from the code compiled as "<string>", with '' (the
    current directory, whatever it is then) first on sys.path where ``python -m uvcffi``
    put the current directory's path."""
    import builtins
    import importlib.machinery
    import types

    if sys.path and os.path.abspath(sys.path[0]) == os.getcwd():
        sys.path[0] = ""
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins  # type: ignore[attr-defined]  # (as python's __main__)
    main.__loader__ = importlib.machinery.BuiltinImporter
    sys.modules["__main__"] = main
    # dont_inherit: this module's own __future__ imports are not the command's
    exec(compile(command, "<string>", "exec", dont_inherit=True), main.__dict__)


def _run_as_main(mod_name: str, alter_argv: bool) -> None:
    """Run module ``mod_name`` as ``python -m`` does, or with alter_argv False the __main__
    of the directory or zip file that is sys.path[0], as ``python dir`` does: through
    runpy's entry point for both (python calls it itself), in a new __main__ module.  So
    the program keeps its module as sys.modules['__main__'], and a module that cannot be
    found is python's one-line message and exit status 1, not a traceback."""
    import builtins
    import types

    main = types.ModuleType("__main__")
    main.__builtins__ = builtins  # type: ignore[attr-defined]  # (as python's __main__)
    sys.modules["__main__"] = main
    runpy._run_module_as_main(mod_name, alter_argv)  # type: ignore[attr-defined]


def _run_source(script: str) -> None:
    """Run a source file as ``python script.py`` does: as a new __main__ module whose
    __file__ is the absolute path (a script that changes directory still finds its own
    files) with sys.argv[0] as given, and a SourceFileLoader as __loader__.  (runpy's
    run_path keeps the path as given in both and sets no loader.)"""
    import importlib.machinery
    import types

    path = os.path.abspath(script)
    with open(path, "rb") as f:
        source = f.read()
    # dont_inherit: this module's own __future__ imports are not the script's
    code = compile(source, path, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__cached__ = None  # type: ignore[attr-defined]  # (types.ModuleType has no slot)
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def _is_bytecode(path: str) -> bool:
    import importlib.util

    with open(path, "rb") as f:
        return f.read(len(importlib.util.MAGIC_NUMBER)) == importlib.util.MAGIC_NUMBER


def _script_path(script: str) -> None:
    """Make sys.path what ``python script.py`` would have: ``python -m uvcffi`` put the
    current directory first, where python puts the script's directory (symlinks resolved),
    or for a directory or zip file its absolute path (a program that changes directory
    still imports from it).  (Under -P or -I python puts no current directory there, and
    sys.path stays as it is.)"""
    if not sys.path or os.path.abspath(sys.path[0]) != os.getcwd():
        if not os.path.isfile(script) or _is_zip(script):
            sys.path.insert(0, os.path.abspath(script))  # where its __main__ is looked up
        return
    if os.path.isfile(script) and not _is_zip(script):
        sys.path[0] = os.path.dirname(os.path.realpath(script))
    else:
        sys.path[0] = os.path.abspath(script)


def _is_zip(path: str) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


if __name__ == "__main__":
    sys.exit(main())
