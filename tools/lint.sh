#!/usr/bin/env bash
# The static checks, in CPython's venv (tools/setup.sh installs ruff and mypy there): ruff on
# the whole tree (settings in pyproject.toml), then mypy --strict on the package as it is
# installed (tools/typecheck.py).  Exits non-zero if either finds anything.  tools/test.sh
# runs this before the test suites.
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv-cpython/bin/python
status=0
echo "=== ruff check: $($py -m ruff --version)"
$py -m ruff check --no-cache . || status=1
echo "=== mypy --strict -p uvcffi: $($py -m mypy --version)"
$py tools/typecheck.py || status=1
exit $status
