#!/usr/bin/env bash
# Runs the JavaScript tests (ctest's js_* entries call it).
#   run.sh deps        installs this folder's npm packages (npm ci, from package-lock.json)
#   run.sh FILE...     runs test files with node's test runner
#                      (RTGATE_JS_TRANSPORT=sse|longpoll: the client over that transport, no WebSocket)
# Node 20 runs with --experimental-websocket, so the library is tested on
# Node's own WebSocket (Node 22 has it by default); on Node 18 (Debian 12's
# nodejs) the tests pass the `ws` package's WebSocket through options.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = deps ]; then
    if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
        echo "npm packages up to date"
        exit 0
    fi
    exec npm ci --no-audit --no-fund --prefer-offline
fi
flags=()
# RTGATE_JS_TRANSPORT=sse|longpoll: no WebSocket at all (lib/harness.mjs).
if [ "$(node -p 'process.versions.node.split(".")[0]')" = 20 ] && [ "${RTGATE_JS_TRANSPORT:-websocket}" = websocket ]; then
    flags+=(--experimental-websocket --no-warnings=ExperimentalWarning)
fi
exec node "${flags[@]}" --test "$@"
