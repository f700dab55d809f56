#!/usr/bin/env bash
# The main job: set up (tools/setup.sh), then run the benchmark suite side by side with
# asyncio (and uvloop on CPython) on both runtimes.  Extra arguments go to uvcffi.bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv-cpython/bin/python -m pip install -q --disable-pip-version-check uvloop || echo "bench: uvloop not installable, comparing with asyncio only"
mkdir -p bench-results
.venv-cpython/bin/python -m uvcffi.bench --json bench-results/cpython.json --plot bench-results/cpython.svg "$@"
.venv-pypy/bin/python -m uvcffi.bench --json bench-results/pypy.json --plot bench-results/pypy.svg "$@"
