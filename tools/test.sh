#!/usr/bin/env bash
# The test command: set up (tools/setup.sh), run the static checks (tools/lint.sh: ruff and
# mypy --strict), then the whole suite on CPython and on PyPy.  Extra arguments go to pytest.
# Exits non-zero if the checks or either runtime fail.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1

# Run with only stdin, stdout and stderr open, as CI does: an inheritable fd left open by
# whatever started us would change how children are started (close_fds then needs Popen).
for fd in $(ls /proc/$BASHPID/fd); do
    case $fd in 0|1|2|255) ;; *) eval "exec $fd>&-" ;; esac
done

status=0
bash tools/lint.sh
rc=$?
echo "=== lint: exit $rc"
[ $rc -eq 0 ] || status=1

# CPython runs the suite twice: on the accelerator (uvcffi._accel, the default there) and on
# the pure-Python code PyPy runs (UVCFFI_PURE_PYTHON=1), as CPython tests its C and Python
# Futures.
#
# PyPy runs without pytest's assertion rewriting (--assert=plain; a failed assert still fails,
# with a plainer message).  PyPy before 7.3.16 (Debian's is 7.3.11) has a bug in its
# incremental GC that corrupts objects while pytest rewrites the test modules' ASTs at
# collection, before any test runs (pytest issue 11168).  Collections of this suite on fresh
# clones (`pytest --collect-only`, a random hash seed each): 3 of 150 failed (two segfaults,
# one AST node replaced by a sequence iterator), 3 of 25 with PYPY_GC_NURSERY=256k; with
# --assert=plain, 0 of 75 with that nursery.
for run in cpython cpython-pure pypy; do
    rt=${run%-pure}
    pure=""; [ "$run" = cpython-pure ] && pure=1
    assert=""; [ "$run" = pypy ] && assert=--assert=plain
    echo "=== tests on $run: $(.venv-$rt/bin/python -c 'import sys; print(sys.implementation.name, sys.version.split()[0])')"
    # The outer timeout is a watchdog for a hang pytest-timeout cannot interrupt.
    UVCFFI_PURE_PYTHON=$pure timeout -k 10 2400 ".venv-$rt/bin/python" -m pytest -p no:cacheprovider -q -ra $assert "$@"
    rc=$?
    echo "=== $run: pytest exit $rc"
    [ $rc -eq 0 ] || status=1
done
exit $status
