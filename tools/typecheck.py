"""mypy --strict on the package as it is installed: ``mypy -p uvcffi``.

The source tree is not laid out as the package (pyproject's package-dir maps uvcffi ->
loop/, uvcffi.transports -> transports/), and the editable install finds it through an
import hook mypy cannot see.  So this lays the package out as a tree of symlinks to the real
files in build/typecheck/ (git-ignored) and runs mypy there, with the settings of
pyproject.toml; its messages name the real files.  tests/typed/public_api.py, what a user's
code sees of the package, is checked with it.  Extra arguments go to mypy.

    python tools/typecheck.py       # exit status: mypy's
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREE = os.path.join(ROOT, "build", "typecheck")
# package directory in the installed layout -> source directory (pyproject's package-dir)
PACKAGES = {"uvcffi": "loop", "uvcffi/transports": "transports", "uvcffi/bench": "loop/bench"}
SUFFIXES = (".py", ".pyi", "py.typed")


def lay_out() -> dict[str, str]:
    """Make the link tree afresh; return {path in the tree: real path, relative to ROOT}."""
    shutil.rmtree(TREE, ignore_errors=True)
    links = {}
    for package, source in PACKAGES.items():
        os.makedirs(os.path.join(TREE, package))
        for name in sorted(os.listdir(os.path.join(ROOT, source))):
            if not name.endswith(SUFFIXES):
                continue
            real = os.path.join(source, name)
            link = os.path.join(TREE, package, name)
            os.symlink(os.path.join(ROOT, real), link)
            links[os.path.relpath(link, ROOT)] = real
    # What a user's code sees (a module of its own beside the package).
    real = os.path.join("tests", "typed", "public_api.py")
    link = os.path.join(TREE, "uvcffi_public_api.py")
    os.symlink(os.path.join(ROOT, real), link)
    links[os.path.relpath(link, ROOT)] = real
    return links


def main(argv: list[str]) -> int:
    links = lay_out()
    cmd = [sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "pyproject.toml"),
           "--cache-dir", os.path.join(ROOT, ".mypy_cache"), "-p", "uvcffi",
           "-m", "uvcffi_public_api", *argv]
    res = subprocess.run(cmd, cwd=TREE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    out = res.stdout
    # mypy names files relative to its cwd (the tree): name the real ones instead.
    for link, real in sorted(links.items(), key=lambda item: -len(item[0])):
        out = out.replace(os.path.relpath(os.path.join(ROOT, link), TREE), real)
    sys.stdout.write(out)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
