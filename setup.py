# The cffi extension is declared here because `cffi_modules` is a setup() keyword that
# pyproject.toml cannot express; everything else lives in pyproject.toml.
#
# On CPython a second extension, uvcffi._accel (csrc/cpython/accel.c), is built against the
# CPython C API: the accelerator of the loop's hottest paths.  PyPy runs the pure-Python
# code instead, and so does CPython when UVCFFI_PURE_PYTHON=1 is set at run time.
import os
import platform
import sys

from setuptools import Extension, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # build_ffi, beside this file

ext_modules = []
if platform.python_implementation() == "CPython":
    import build_ffi

    ext_modules.append(Extension(
        "uvcffi._accel",
        sources=["csrc/cpython/accel.c"],
        include_dirs=["csrc"] + build_ffi.flags["include_dirs"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                            "-Wno-missing-field-initializers", "-std=gnu11"],
    ))

setup(cffi_modules=["build_ffi.py:ffibuilder"], ext_modules=ext_modules)
