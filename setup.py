# The cffi extension is declared here because `cffi_modules` is a setup() keyword that
# pyproject.toml cannot express; everything else lives in pyproject.toml.
#
# On CPython a second extension, uvcffi._accel (csrc/cpython/accel.c), is built against the
# CPython C API: the accelerator of the loop's hottest paths.  PyPy runs the pure-Python
# code instead, and so does CPython when UVCFFI_PURE_PYTHON=1 is set at run time.
#
# Wheels carry the libuv they were built against. After building the extension, build_ext
# copies the shared library it links (build_ffi.libuv_library(): the system's libuv.so.1 or
# vendor/libuv's; Debian's static libuv_a.a is not -fPIC, so the shared one travels) into
# the package as uvcffi/libuv.so.1, where the extension's rpath, $ORIGIN (a RUNPATH), finds
# it on a machine without libuv. An editable install (`pip install -e .`, built in place)
# gets no copy and keeps using the libuv it was linked against.
#
# Why this and not `auditwheel repair` (measured on Debian 12, CPython 3.11, libuv 1.44.2):
# - `python -m build` alone makes the working wheel, on CPython and PyPy; auditwheel is a
#   second step that needs patchelf.
# - Same size: 315 KB against 316 KB repaired (230 KB without libuv); same import time:
#   `import uvcffi` 175 against 181 ms a process, uvcffi._uv 0.44 against 0.52 ms (medians
#   of 40, within noise).
# - The copy keeps libuv's soname, so the system's libuv can still be preferred
#   (LD_LIBRARY_PATH comes before a RUNPATH, and a libuv.so.1 already loaded is reused);
#   auditwheel renames it (libuv-<hash>.so.1.0.0), which neither can replace.
# What auditwheel adds is a manylinux tag (manylinux_2_34 from Debian 12): run on this
# wheel, it finds the copy inside, grafts nothing and only retags it.
from __future__ import annotations

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # build_ffi, beside this file
import build_ffi  # noqa: E402


class build_ext_with_libuv(build_ext):
    def run(self):
        super().run()
        if self.inplace:
            return
        dest = os.path.join(self.build_lib, "uvcffi", "libuv.so.1")
        self.copy_file(build_ffi.libuv_library(), dest)


ext_modules = []
if platform.python_implementation() == "CPython":
    # The accelerator reads the C core's structs (csrc/uvc_core.h), hence libuv's headers.
    ext_modules.append(Extension(
        "uvcffi._accel",
        sources=["csrc/cpython/accel.c"],
        include_dirs=["csrc"] + build_ffi.flags["include_dirs"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                            "-Wno-missing-field-initializers", "-std=gnu11"],
    ))

setup(cffi_modules=["build_ffi.py:ffibuilder"], ext_modules=ext_modules,
      cmdclass={"build_ext": build_ext_with_libuv})
