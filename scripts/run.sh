#!/usr/bin/env bash
# Sets up, builds (release) and runs rtgate on the in-memory engine at
# ws://0.0.0.0:8080/ws, serving the demo page (clients/) at
# http://localhost:8080/. Extra arguments go to rtgate (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target rtgate >/dev/null
exec build-release/gateway/rtgate --listen 0.0.0.0:8080 --static clients "$@"
