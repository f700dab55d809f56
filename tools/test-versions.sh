#!/usr/bin/env bash
# The test suite on other CPython versions, when this machine has them (pyenv's, or
# python3.X on PATH): uvcffi promises 3.9 through 3.14.  Not part of the test command (CI
# has only the system Python and PyPy); the stdlib test_asyncio mixins, bound to 3.11,
# skip elsewhere.  Each version gets its own virtualenv (.venv-3.X) and its own copy of
# the tree, so the main tree's build is left alone.  Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

status=0
found=0
for minor in 9 10 12 13 14; do  # 3.11 is the test command's
    py=""
    for candidate in "$(command -v "python3.$minor" || true)" "$HOME"/.pyenv/versions/3."$minor".*/bin/python; do
        [ -x "$candidate" ] && py=$candidate
    done
    [ -n "$py" ] || continue
    found=1
    venv="$root/.venv-3.$minor"
    tree="$root/.tree-3.$minor"
    echo "=== CPython 3.$minor ($py)"
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "setuptools>=61" wheel cffi build pytest pytest-asyncio pytest-timeout || { status=1; continue; }
    rm -rf "$tree"
    git worktree add -q --detach "$tree" HEAD 2>/dev/null || cp -r "$root" "$tree"
    # uncommitted changes too: test what is in the working tree
    git diff HEAD | (cd "$tree" && git apply --allow-empty 2>/dev/null || true)
    (cd "$tree" && "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --no-build-isolation --no-deps -e . && \
        timeout -k 10 1800 "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" tests)
    rc=$?
    echo "=== 3.$minor: pytest exit $rc"
    [ $rc -eq 0 ] || status=1
    git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
done
[ $found = 1 ] || echo "test-versions: no other CPython found"
exit $status
