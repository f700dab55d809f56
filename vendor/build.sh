#!/usr/bin/env bash
# Build the libuv source tree at vendor/libuv as a shared library in vendor/libuv/build.
# (A static libuv must be built with -fPIC to go into an extension; the shared one is simpler.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src="$here/libuv"
[ -d "$src" ] || { echo "vendor/build.sh: no libuv source tree at $src" >&2; exit 1; }
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLIBUV_BUILD_TESTS=OFF \
      -DLIBUV_BUILD_BENCH=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON >/dev/null
cmake --build "$src/build" -j"$(nproc)" >/dev/null
