# The cffi extension is declared here because `cffi_modules` is a setup() keyword that
# pyproject.toml cannot express; everything else lives in pyproject.toml.
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
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class build_ext_with_libuv(build_ext):
    def run(self):
        super().run()
        if self.inplace:
            return
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import build_ffi

        dest = os.path.join(self.build_lib, "uvcffi", "libuv.so.1")
        self.copy_file(build_ffi.libuv_library(), dest)


setup(cffi_modules=["build_ffi.py:ffibuilder"], cmdclass={"build_ext": build_ext_with_libuv})
