"""The Python half of tools/sanitize.sh.

As a pytest plugin (``-p sanitize_check``): when the session ends, collect garbage (closed
loops free their C memory through ffi.gc) and ask LeakSanitizer for a leak check while the
interpreter is still whole.  The check runs there, not at exit, because CPython never frees
everything at exit: what it leaves behind, and C memory only those leftovers point to, would
read as leaks.  The report goes to the sanitizer log like every other report.

As a script (``python sanitize_check.py LOGDIR``): read every sanitizer log the run left
(one file per process) and exit 1 if any holds something that counts, printing it.  Counts:
every AddressSanitizer or UndefinedBehaviorSanitizer report, every line the runtimes wrote
that this file does not know, and each *direct* leak the C core owns.  A leak is the C
core's when the first frame of its allocation stack that is not the sanitizer's allocator
or the C library (which allocates on behalf of its caller, e.g. getaddrinfo) lies in csrc/
or in libuv; leaks first allocated by CPython, cffi's backend or another extension are
theirs, not ours, and are only counted in the summary.  Indirect leaks are never counted:
an indirect leak of the core's memory is reported through its direct owner, or its owner is
a Python object that CPython leaked.
"""
from __future__ import annotations

import ctypes
import gc
import os
import re
import sys

# ---- the pytest plugin ----

def pytest_configure(config):
    """Refuse to run on anything but the sanitized copy this file was copied next to."""
    import uvcffi._uv

    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.dirname(uvcffi._uv.__file__) != os.path.join(here, "uvcffi"):
        raise RuntimeError(
            f"sanitize_check: imported {uvcffi._uv.__file__}, not the sanitized build"
        )
    if sys.implementation.name == "cpython":
        from uvcffi import _core
        accel = getattr(_core._accel, "__file__", None)
        if accel is None or os.path.dirname(accel) != os.path.join(here, "uvcffi"):
            raise RuntimeError(f"sanitize_check: the loop runs on accelerator {accel}, not the "
                               "sanitized build's")


def pytest_sessionfinish(session, exitstatus):
    for _ in range(3):
        gc.collect()
    check = getattr(ctypes.CDLL(None), "__lsan_do_recoverable_leak_check", None)
    if check is None:
        raise RuntimeError("sanitize_check: LeakSanitizer is not loaded (LD_PRELOAD libasan?)")
    check()


# ---- the log checker ----

# tools/sanitize.sh has every frame end in "<module path>" (stack_trace_format).
FRAME = re.compile(r"^\s+#\d+ ")
MODULE = re.compile(r"<([^<>]*)>\s*$")
SKIP_MODULE = re.compile(r"/(libasan|libubsan|libc|ld-linux[^/]*)\.so[^/]*$")
LEAK_HEAD = re.compile(r"^(Direct|Indirect) leak of (\d+) byte")


def leak_blocks(lines):
    """Yield (kind, nbytes, frames) for each leak record of a LeakSanitizer report."""
    i = 0
    while i < len(lines):
        m = LEAK_HEAD.match(lines[i])
        i += 1
        if not m:
            continue
        frames = []
        while i < len(lines) and FRAME.match(lines[i]):
            frames.append(lines[i].strip())
            i += 1
        yield m.group(1), int(m.group(2)), frames


def owner_is_core(frames):
    for f in frames:
        m = MODULE.search(f)
        module = m.group(1) if m else ""
        if SKIP_MODULE.search(module):
            continue
        if re.search(r"/libuv\.so[^/]*$", module):
            return True
        # The extension holds the C core and cffi's generated wrappers (uvcffi/_uv.c); the
        # accelerator (CPython) is csrc/cpython/accel.c.
        return re.search(r"/uvcffi/_(uv|accel)\.[^/]*so$", module) is not None and "/csrc/" in f
    return False


def check_file(path):
    """(problems, ignored_leak_bytes) of one log file; problems is a list of texts."""
    with open(path, errors="replace") as f:
        text = f.read()
    problems, ignored = [], 0
    # Split into reports: each starts with a "=====" rule or a "==pid==" line of its own.
    reports = re.split(
        r"\n(?==================================================================)", text
    )
    for rep in reports:
        if not rep.strip():
            continue
        if "ERROR: LeakSanitizer: detected memory leaks" in rep and not re.search(
            r"ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer)|runtime error:", rep
        ):
            lines = rep.splitlines()
            ours = []
            for kind, nbytes, frames in leak_blocks(lines):
                if kind == "Direct" and owner_is_core(frames):
                    ours.append(
                        f"Direct leak of {nbytes} byte(s), C core's:\n    " + "\n    ".join(frames)
                    )
                else:
                    ignored += nbytes
            problems += ours
            # Anything in the report besides leak records, the header and the summary.
            for ln in lines:
                s = ln.strip()
                if (
                    not s
                    or set(s) == {"="}
                    or FRAME.match(ln)
                    or LEAK_HEAD.match(ln)
                    or "ERROR: LeakSanitizer: detected memory leaks" in s
                    or s.startswith("SUMMARY: AddressSanitizer:")
                    and "leaked in" in s
                    or s.startswith("Objects leaked above:")
                    or re.match(r"^0x[0-9a-f]+ \(\d+ bytes\)$", s)
                ):
                    continue
                problems.append(f"unexpected line in a leak report: {s}")
        else:
            problems.append(rep.strip())
    return problems, ignored


def main(logdir):
    files = sorted(os.listdir(logdir))
    bad, ignored = 0, 0
    for name in files:
        problems, ign = check_file(os.path.join(logdir, name))
        ignored += ign
        for p in problems:
            bad += 1
            print(f"--- {name}:\n{p}\n")
    print(f"sanitize: {len(files)} sanitizer log file(s), {bad} finding(s); "
          f"{ignored} byte(s) of leaks left out as not the C core's")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
