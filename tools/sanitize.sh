#!/usr/bin/env bash
# Run the tests under AddressSanitizer (+ LeakSanitizer) and UndefinedBehaviorSanitizer.
#
#   bash tools/sanitize.sh [--pypy] [pytest args]     e.g. -x, -k name, or test paths
#
# Builds the C core (csrc/) with the sanitizers against the system libuv and runs the tests
# that drive it on CPython (--pypy: then on PyPy as well).  Exits non-zero when a test fails
# or a sanitizer reports anything (tools/sanitize_check.py says what counts).  The
# developer's own build and venvs are not touched: everything lives in a temporary
# directory, removed after a clean run and kept (with the logs) after a failed one.
#
# How, and why so:
# - Build.  The package (loop/ as uvcffi/, transports/ in it) and csrc/ are copied to a
#   temporary tree and build_ffi.py runs there, with UVCFFI_CFLAGS giving the sanitizer
#   flags to both compile and link; the extension lands in the copy's uvcffi/, and
#   PYTHONPATH puts that copy ahead of the editable install (whose import finder comes last
#   on sys.meta_path; the pytest plugin checks which extension was imported).
#   loop/_uv.abi3.so, which .venv-cpython imports, is never rebuilt.  The copy takes libuv
#   from pkg-config: a vendor/libuv tree is not used here.
# - Flags.  -fsanitize=address,undefined,float-cast-overflow; -fno-sanitize-recover=all
#   makes any UB fatal (the process exits, so the run fails even if a log were lost);
#   -fno-wrapv undoes the -fwrapv in CPython's own CFLAGS, which distutils puts first and
#   which makes signed overflow defined, silencing UBSan's check of it; -O1 -g
#   -fno-omit-frame-pointer for exact stacks (they come after build_ffi.py's -O2 and win).
# - libuv is Debian's and not instrumented: ASan checks the accesses the C core makes (and
#   the libc calls it intercepts), not those libuv makes.  So freed blocks are filled with
#   0x55 (max_free_fill_size): libuv reading a handle the core freed too early then follows
#   garbage and crashes there, and ASan's SEGV handler prints the stack (tried: without the
#   fill, such a handle went through uv_run unnoticed).
# - Preload.  python is not built with ASan, so the ASan runtime must be the first library
#   in the process: LD_PRELOAD of gcc's libasan.so (gcc -print-file-name=libasan.so), set
#   for the pytest process only.  Children inherit it with the rest of the environment: the
#   tests' Python children that import uvcffi (python -c ..., python -m uvcffi) run the
#   sanitized copy with its checks and logs; children that are other programs (sh, cat,
#   sleep) merely run on ASan's malloc.  The few subprocess tests that give a child an
#   environment of its own (env={...}) start children that do not import uvcffi.
# - Logs.  Each process writes its reports to a file of its own, LOGDIR/asan.PID and
#   LOGDIR/ubsan.PID, so a child's report is not lost in a pipe a test captured;
#   tools/sanitize_check.py reads them all at the end.  ASan takes log_path from
#   ASAN_OPTIONS; UBSan ignores log_path when ASan is loaded too (gcc bug 94328), so the
#   sanitized build also compiles tools/sanitize_ubsan_log.c, which hands
#   $UVCFFI_UBSAN_LOG to libubsan itself when the extension loads.
# - Leaks.  detect_leaks=1 with leak_check_at_exit=0: the leak check runs once, from the
#   pytest plugin in sanitize_check.py when the session ends, while the interpreter is
#   whole (at exit CPython leaves memory behind by design, and C memory its leftovers point
#   to would read as leaks).  PYTHONMALLOC=malloc puts CPython's objects on the heap LSan
#   scans: with pymalloc they live in mmap'd arenas LSan never reads, and every C block
#   reachable only through a Python object (a loop behind its cdata) would read as leaked.
#   Leaks are then counted only when the C core (csrc/ or libuv) allocated them.  Not a
#   suppression file: LSan suppresses a leak when *any* frame of its stack matches, and
#   every C core stack has CPython's frames further down.  Children are not leak-checked
#   (no at-exit check, no plugin): their uvcffi code is the code the pytest process checks.
# - PyPy (--pypy): the same build, preload and checks work.  Tried: LSan finds C memory
#   that live PyPy objects point to (live loops are not reported) and found the DNS leak
#   CPython's run found; what PyPy's GC has not finalized yet (SSL contexts, say) shows up
#   as leaks of other libraries, which the checker leaves out.  Not the default: CPython is
#   what this project requires here, and PyPy adds about as long again.
set -uo pipefail
cd "$(dirname "$0")/.."

RUNTIMES=(cpython)
if [ "${1:-}" = --pypy ]; then RUNTIMES+=(pypy); shift; fi

LIBASAN=$(gcc -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "sanitize: gcc has no libasan.so (Debian: apt-get install libasan8)"; exit 1; }
for rt in "${RUNTIMES[@]}"; do
    [ -x ".venv-$rt/bin/python" ] || { bash tools/setup.sh || exit 1; break; }
done

# The tests: every project test module (loop core, streams, datagrams, pipes, subprocesses,
# sockets, servers, DNS, sendfile, TLS) and CPython's test_asyncio loop mixins bound to
# uvcffi (tests/cpython; skipped on PyPy).  Left out by default: test_asyncio_suites.py
# (tasks, futures, locks, queues... on a uvcffi loop), 4 minutes of mostly waiting that
# drive little C beyond what the rest drives; name it to run it.  Test paths given as
# arguments replace the default selection; other arguments are added to it.
TESTS=(tests/test_*.py tests/cpython --ignore=tests/cpython/test_asyncio_suites.py)
for arg in "$@"; do
    case $arg in tests/*|./tests/*) TESTS=(); break ;; esac
done

# Run with only stdin, stdout and stderr open, as tools/test.sh and CI do.
for fd in $(ls /proc/$BASHPID/fd); do
    case $fd in 0|1|2|255) ;; *) eval "exec $fd>&-" ;; esac
done

CFLAGS="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-wrapv"
CFLAGS+=" -O1 -g -fno-omit-frame-pointer"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/uvcffi-sanitize.XXXXXX")
status=0

for rt in "${RUNTIMES[@]}"; do
    PY=$PWD/.venv-$rt/bin/python SRC=$WORK/$rt/src LOGS=$WORK/$rt/logs
    mkdir -p "$SRC" "$LOGS"
    cp -r csrc build_ffi.py tools/sanitize_check.py "$SRC"/
    cp tools/sanitize_ubsan_log.c "$SRC"/csrc/
    cp -r loop "$SRC/uvcffi"
    rm -f "$SRC"/uvcffi/_uv*.so "$SRC"/uvcffi/_accel*.so
    cp -r transports "$SRC/uvcffi/transports"

    echo "=== sanitize ($rt): building the C core with ASan + UBSan in $SRC"
    if ! (cd "$SRC" && UVCFFI_CFLAGS=$CFLAGS "$PY" build_ffi.py >"$WORK/$rt/build.log" 2>&1); then
        cat "$WORK/$rt/build.log"; echo "sanitize ($rt): build failed"; status=1; continue
    fi
    if [ "$rt" = cpython ]; then
        # The CPython accelerator (csrc/cpython/accel.c) handles Python objects in C: it is
        # built with the same flags, so the run exercises it (the loop uses it by default).
        suffix=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
        pyinc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
        # shellcheck disable=SC2086
        if ! gcc -shared -fPIC -std=gnu11 -Wall -Wextra -Wno-unused-parameter \
                -Wno-missing-field-initializers $CFLAGS -I"$pyinc" -I"$SRC/csrc" \
                $(pkg-config --cflags libuv) "$SRC/csrc/cpython/accel.c" \
                -o "$SRC/uvcffi/_accel$suffix" >>"$WORK/$rt/build.log" 2>&1; then
            cat "$WORK/$rt/build.log"; echo "sanitize ($rt): accelerator build failed"
            status=1; continue
        fi
    fi
    grep -E "warning|error" "$WORK/$rt/build.log"

    # stack_trace_format: ASan's own frame text plus the module, for sanitize_check.py.
    ASAN="log_path=$LOGS/asan:detect_leaks=1:leak_check_at_exit=0:max_free_fill_size=4096"
    ASAN+=":stack_trace_format='    #%n %p %F %L <%m>'"
    UBSAN="print_stacktrace=1:halt_on_error=1"

    echo "=== sanitize ($rt): running ${TESTS[*]} $*"
    start=$SECONDS
    # PyPy without pytest's assertion rewriting: tools/test.sh says why.
    assert=""; [ "$rt" = pypy ] && assert=--assert=plain
    # The outer timeout is a watchdog for a hang pytest-timeout cannot interrupt.
    timeout -k 10 2400 env LD_PRELOAD="$LIBASAN" ASAN_OPTIONS="$ASAN" UBSAN_OPTIONS="$UBSAN" \
        UVCFFI_UBSAN_LOG="$LOGS/ubsan" UVCFFI_SANITIZED=1 PYTHONMALLOC=malloc PYTHONPATH="$SRC" \
        "$PY" -m pytest -p no:cacheprovider -p sanitize_check -q -ra $assert "${TESTS[@]}" "$@"
    rc=$?
    echo "=== sanitize ($rt): pytest exit $rc after $((SECONDS - start)) s"
    "$PY" "$SRC/sanitize_check.py" "$LOGS"
    check=$?
    if [ $rc -ne 0 ] || [ $check -ne 0 ]; then
        echo "=== sanitize ($rt): FAILED (tests: exit $rc; sanitizer findings: $([ $check -eq 0 ] && echo none || echo yes)); logs in $LOGS"
        status=1
    fi
done

if [ $status -eq 0 ]; then
    rm -rf "$WORK"
    echo "=== sanitize: clean"
else
    echo "=== sanitize: FAILED; build and logs kept in $WORK"
fi
exit $status
