# The cffi extension is declared here because `cffi_modules` is a setup() keyword that
# pyproject.toml cannot express; everything else lives in pyproject.toml.
#
# On CPython a second extension, uvcffi._accel (csrc/cpython/accel.c), is built against the
# CPython C API: the accelerator of the loop's hottest paths.  PyPy runs the pure-Python
# code instead, and so does CPython when UVCFFI_PURE_PYTHON=1 is set at run time.
import platform

from setuptools import Extension, setup

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
