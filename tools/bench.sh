#!/usr/bin/env bash
# The main job: set up (tools/setup.sh), then run the benchmark suite side by side with
# asyncio, uvloop and rloop (on CPython) on both runtimes.  Extra arguments go to uvcffi.bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# wrk drives the HTTP rows (they are skipped, with the reason, without it).
if ! command -v wrk >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null; } \
        || echo "bench: wrk not installable, the HTTP rows are skipped"
fi
cpy_pip() { .venv-cpython/bin/python -m pip install -q --disable-pip-version-check "$@"; }
cpy_pip uvloop || echo "bench: uvloop not installable, comparing without it"
cpy_pip rloop || echo "bench: rloop not installable, comparing without it"
# uvicorn's fast HTTP parser; without it uvicorn runs on h11 and its row says so.
cpy_pip httptools || echo "bench: httptools not installable on CPython, uvicorn runs on h11"
# On PyPy: httptools builds from source (pypy3-dev); rloop is not installed, its PyPy 3.9
# wheel (0.2.1) fails to load (undefined symbol PyContext_Enter); no uvloop.
.venv-pypy/bin/python -m pip install -q --disable-pip-version-check httptools \
    || echo "bench: httptools not installable on PyPy, uvicorn runs on h11 there"
mkdir -p bench-results
.venv-cpython/bin/python -m uvcffi.bench --json bench-results/cpython.json --plot bench-results/cpython.svg "$@"
.venv-pypy/bin/python -m uvcffi.bench --json bench-results/pypy.json --plot bench-results/pypy.svg "$@"
