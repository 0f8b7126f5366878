#!/usr/bin/env bash
# Sets up, builds the test build (ASan+UBSan, -Werror) and runs every test:
# Criterion unit suites, integration tests against the real binary over real
# WebSockets, and the load-tool smoke run; then every fuzz target briefly
# (clang, ASan+UBSan, build-fuzz: scripts/fuzz.sh, tests/fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DRTGATE_SANITIZE=ON -DRTGATE_WERROR=ON >/dev/null
cmake --build build-test -j"$(nproc)"
(cd build-test && ctest --output-on-failure --timeout 900 "$@")
scripts/fuzz.sh --smoke "$@"
