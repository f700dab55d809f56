#!/usr/bin/env bash
# The test command: set up (tools/setup.sh), then run the whole suite on CPython and on PyPy.
# Extra arguments go to pytest.  Exits non-zero if either runtime fails.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1

# Run with only stdin, stdout and stderr open, as CI does: an inheritable fd left open by
# whatever started us would change how children are started (close_fds then needs Popen).
for fd in $(ls /proc/$BASHPID/fd); do
    case $fd in 0|1|2|255) ;; *) eval "exec $fd>&-" ;; esac
done

status=0
for rt in cpython pypy; do
    echo "=== tests on $rt: $(.venv-$rt/bin/python -c 'import sys; print(sys.implementation.name, sys.version.split()[0])')"
    # The outer timeout is a watchdog for a hang pytest-timeout cannot interrupt.
    timeout -k 10 2400 ".venv-$rt/bin/python" -m pytest -p no:cacheprovider -q -ra "$@"
    rc=$?
    echo "=== $rt: pytest exit $rc"
    [ $rc -eq 0 ] || status=1
done
exit $status
