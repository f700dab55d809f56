"""cffi builder for uvcffi._uv: the C core in csrc/, linked against libuv.

libuv comes from a source tree at vendor/libuv when there is one (built by vendor/build.sh
into vendor/libuv/build), else from the system through pkg-config (Debian: libuv1-dev).
Each csrc/*.h lists its Python-facing declarations between "cffi-begin"/"cffi-end" markers.
UVCFFI_CFLAGS, when set, adds flags to both the compile and the link of the C core (used by
tools/sanitize.sh for -fsanitize=...; later flags win, so -O1 there overrides -O2).
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
VENDOR = os.path.join(HERE, "vendor", "libuv")
# The extension looks for libuv in its own directory first: where a wheel carries its copy.
ORIGIN = "$ORIGIN"


def libuv_flags():
    """Compiler and linker flags for libuv, or exit with what to install."""
    if os.path.isdir(VENDOR):
        build = os.path.join(VENDOR, "build")
        if not glob.glob(os.path.join(build, "libuv.so*")):
            subprocess.check_call(["bash", os.path.join(HERE, "vendor", "build.sh")])
        return {
            "include_dirs": [os.path.join(VENDOR, "include")],
            "library_dirs": [build],
            "runtime_library_dirs": [ORIGIN, build],
            "libraries": ["uv"],
        }
    try:
        cflags = subprocess.check_output(["pkg-config", "--cflags", "libuv"], text=True)
        libs = subprocess.check_output(["pkg-config", "--libs", "libuv"], text=True)
    except (OSError, subprocess.CalledProcessError):
        sys.exit(
            "uvcffi: libuv not found. Install the system package (Debian/Ubuntu: "
            "`apt-get install libuv1-dev pkg-config`) or place a libuv source tree at "
            "vendor/libuv (see vendor/README.md)."
        )
    flags = {"include_dirs": [], "library_dirs": [], "libraries": [],
             "runtime_library_dirs": [ORIGIN]}
    for tok in shlex.split(cflags + " " + libs):
        if tok.startswith("-I"):
            flags["include_dirs"].append(tok[2:])
        elif tok.startswith("-L"):
            flags["library_dirs"].append(tok[2:])
        elif tok.startswith("-l"):
            flags["libraries"].append(tok[2:])
    return flags


def libuv_library():
    """The libuv shared library the extension links against (by its soname, libuv.so.1, as
    every libuv 1.x): setup.py copies it into wheels beside the extension (see setup.py)."""
    dirs = list(flags["library_dirs"])
    if not os.path.isdir(VENDOR):
        libdir = subprocess.check_output(["pkg-config", "--variable=libdir", "libuv"], text=True)
        dirs.append(libdir.strip())
    for d in dirs:
        path = os.path.join(d, "libuv.so.1")
        if os.path.exists(path):
            return os.path.realpath(path)
    sys.exit(f"uvcffi: no libuv.so.1 in {dirs} to put into the wheel")


def cdef_of(header):
    with open(header) as f:
        text = f.read()
    m = re.search(r"/\* cffi-begin \*/(.*?)/\* cffi-end \*/", text, re.S)
    if not m:
        raise SystemExit(f"{header}: no cffi-begin/cffi-end markers")
    return m.group(1)


# uvc_core.h first: the other headers use its types.
headers = sorted(
    glob.glob(os.path.join(CSRC, "*.h")), key=lambda h: (not h.endswith("uvc_core.h"), h)
)
sources = sorted(glob.glob(os.path.join(CSRC, "*.c")))

flags = libuv_flags()
extra = shlex.split(os.environ.get("UVCFFI_CFLAGS", ""))
ffibuilder = FFI()
ffibuilder.cdef("\n".join(cdef_of(h) for h in headers))
ffibuilder.set_source(
    "uvcffi._uv",
    "\n".join(f'#include "{os.path.basename(h)}"' for h in headers),
    sources=[os.path.relpath(s, HERE) for s in sources],
    include_dirs=[CSRC] + flags["include_dirs"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"] + extra,
    extra_link_args=extra,
    **{k: v for k, v in flags.items() if k != "include_dirs"},
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
