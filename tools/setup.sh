#!/usr/bin/env bash
# Set up everything uvcffi needs on a fresh Debian/Ubuntu machine: libuv and PyPy from the
# system packages, then one virtualenv per runtime (.venv-cpython, .venv-pypy) with uvcffi
# installed in editable mode and the test tools.  Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in libuv1-dev pkg-config pypy3 pypy3-venv pypy3-dev pypy3-lib-testsuite; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

make_venv() {  # make_venv DIR INTERPRETER PACKAGES...
    local dir=$1 py=$2; shift 2
    [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
    # --no-build-isolation: PyPy's cffi is built in; an isolated build would fetch another.
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation -e .
}

# What the recipe tests (tests/recipes) run under: servers and async libraries from PyPI.
RECIPES=("uvicorn>=0.36" hypercorn aiohttp "anyio>=4.2")
# What loop.stats()'s OpenTelemetry export is tested with (tests/test_stats.py).
OTEL=(opentelemetry-api opentelemetry-sdk)

# The static checks (tools/lint.sh), on CPython only: pinned, so that a new release's new
# rules or inference cannot fail the test command on code that did not change.
LINT=("mypy==2.4.1" "ruff==0.17.6")

make_venv .venv-cpython python3 setuptools wheel cffi build pytest pytest-asyncio pytest-timeout \
    "${OTEL[@]}" "${RECIPES[@]}" "${LINT[@]}"
make_venv .venv-pypy pypy3 setuptools wheel build pytest pytest-asyncio pytest-timeout "${OTEL[@]}"
# On PyPy a recipe package that does not install is left out (its recipe tests skip, naming
# it): all in one pip call, and only if that fails, one call each.
pypy_pip() { .venv-pypy/bin/python -m pip install -q --disable-pip-version-check "$@"; }
pypy_pip "${RECIPES[@]}" || for pkg in "${RECIPES[@]}"; do
    pypy_pip "$pkg" || echo "setup: $pkg does not install on PyPy; its recipe tests skip"
done
echo "setup: ready (.venv-cpython: $(.venv-cpython/bin/python -V), .venv-pypy: $(.venv-pypy/bin/python -V 2>&1 | head -1))"
