#!/usr/bin/env bash
# bench/presence.sh: rtgate-load's presence scenario on one node and across two nodes, in one
# invocation (docs/loadtest.md has the results and how to read them).
#
# Starts, on free loopback ports:
#   - rtgate with the memory engine (one node);
#   - nats-server with JetStream (fresh temp store) and two rtgates on it (--nats), A and B;
# then runs:
#   mem-sets     memory engine, geo.set only: server CPU per set
#   mem          memory engine: sets + geo.near + geo.watch, all clients on the one node
#   nats-1node   the NATS engine, all clients on A (B idle): what the fleet costs one node
#   nats-2node   setters on A, queriers and watchers on B: every near and every watch event
#                crosses NATS; event latency = arrival at B - the setter's meta.t
# and stops every process it started, by pid. Each run uses its own space, so nothing one run
# left followed on B affects the next.
#
# Results: the JSON lines go to $OUT/presence.jsonl (appended; `label` names the run) and a
# short table is printed at the end.
#
# Usage: bench/presence.sh [--quick]   (--quick: 3 s windows, to check the script)
# Environment: BUILD (default build-rel), RTGATE, LOAD, NATS_SERVER, OUT (default bench/out),
#   SETTERS (1000), SET_RATE (2000), QUERIERS (10), QUERY_RATE (200), WATCHERS (20),
#   DURATION (10), WARMUP (2).
# A default run takes about 75 s; every rtgate-load run has a hard --timeout of 60 s, so the
# script stops by itself within about 4 minutes whatever happens.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port
bench_paths build-rel # BUILD, RTGATE, LOAD, NATS_SERVER, OUT, SERVER_CPUS, CLIENT_CPUS (lib.sh)
SETTERS=${SETTERS:-1000}
SET_RATE=${SET_RATE:-2000}
QUERIERS=${QUERIERS:-10}
QUERY_RATE=${QUERY_RATE:-200}
WATCHERS=${WATCHERS:-20}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}

case "${1:-}" in
--quick) DURATION=3 WARMUP=1 ;;
-h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
"") ;;
*) echo "presence.sh: unknown option $1" >&2; exit 2 ;;
esac

for b in "$RTGATE" "$LOAD"; do
    [ -x "$b" ] || { echo "presence.sh: $b is missing; build first:" >&2
        echo "  cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && cmake --build build-rel -j2 --target rtgate rtgate-load" >&2
        exit 2; }
done
command -v "$NATS_SERVER" > /dev/null || { echo "presence.sh: nats-server not found" >&2; exit 2; }

mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/rtgate-presence.XXXXXX)
RESULTS=$OUT/presence.jsonl
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null; done
    PIDS=()
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



GW_OPTS=(--geo-rate 1000 --geo-burst 1000 --msg-rate 100000 --msg-burst 100000 --ip-conn-rate 0
    --log-level warn)

MPORT=$(free_port) NPORT=$(free_port) APORT=$(free_port) BPORT=$(free_port)
"$RTGATE" --listen 127.0.0.1:$MPORT "${GW_OPTS[@]}" > "$TMP/mem.log" 2>&1 &
MEM=$!
PIDS+=("$MEM")
"$NATS_SERVER" -js -a 127.0.0.1 -p "$NPORT" --store_dir "$TMP/js" > "$TMP/nats.log" 2>&1 &
NATS=$!
PIDS+=("$NATS")
wait_port "$NPORT" 15 || { echo "presence.sh: nats-server did not start" >&2; tail -5 "$TMP/nats.log" >&2; exit 1; }
"$RTGATE" --listen 127.0.0.1:$APORT --node-id bench-a --nats nats://127.0.0.1:$NPORT "${GW_OPTS[@]}" > "$TMP/a.log" 2>&1 &
GWA=$!
PIDS+=("$GWA")
"$RTGATE" --listen 127.0.0.1:$BPORT --node-id bench-b --nats nats://127.0.0.1:$NPORT "${GW_OPTS[@]}" > "$TMP/b.log" 2>&1 &
GWB=$!
PIDS+=("$GWB")
for p in $MPORT $APORT $BPORT; do
    wait_port "$p" 15 || { echo "presence.sh: a gateway did not start" >&2; tail -5 "$TMP"/*.log >&2; exit 1; }
done
sleep 1 # the two nodes hear each other's first heartbeat

FAILED=0
RUN_ID=$(date +%s)
run() { # run LABEL ARGS...
    local label=$1
    shift
    echo "== $label" >&2
    "$LOAD" --scenario presence --label "$label" --space "b$RUN_ID-${label//[^A-Za-z0-9]/}" \
        --setters "$SETTERS" --set-rate "$SET_RATE" --duration "$DURATION" --warmup "$WARMUP" \
        --timeout 60 --json "$RESULTS" "$@" > "$TMP/$label.json" || FAILED=1
    cat "$TMP/$label.json"
}

run mem-sets --url ws://127.0.0.1:$MPORT/ws --queriers 0 --query-rate 0 --server-pid $MEM
run mem --url ws://127.0.0.1:$MPORT/ws --queriers "$QUERIERS" --query-rate "$QUERY_RATE" \
    --watchers "$WATCHERS" --server-pid $MEM
run nats-1node --url ws://127.0.0.1:$APORT/ws --queriers "$QUERIERS" --query-rate "$QUERY_RATE" \
    --watchers "$WATCHERS" --server-pid $GWA,$GWB --broker-pid $NATS
run nats-2node --url ws://127.0.0.1:$APORT/ws --url2 ws://127.0.0.1:$BPORT/ws \
    --queriers "$QUERIERS" --query-rate "$QUERY_RATE" --watchers "$WATCHERS" \
    --server-pid $GWA,$GWB --broker-pid $NATS

python3 - "$TMP" mem-sets mem nats-1node nats-2node << 'EOF'
import json, os, sys
tmp = sys.argv[1]
print("| run | sets/s | set p50/p99 ms | near/s | near p50/p99 ms | events/s | event p50/p99 ms | server us/set | us/request | ok |")
print("|---|---|---|---|---|---|---|---|---|---|")
for label in sys.argv[2:]:
    try:
        r = json.loads(open(os.path.join(tmp, label + ".json")).readline())
    except (OSError, ValueError):
        print("| %s | (no result) |" % label)
        continue
    ms = lambda h: "%.2f / %.2f" % (h["p50"] / 1e3, h["p99"] / 1e3) if h["count"] else "-"
    s = r.get("server", {})
    print("| %s | %.0f | %s | %.0f | %s | %.0f | %s | %s | %s | %s |" % (
        label, r["sets"]["per_s"], ms(r["set_latency_us"]), r["queries"]["per_s"],
        ms(r["near_latency_us"]), r["watch"]["events_per_s"], ms(r["event_latency_us"]),
        s.get("cpu_us_per_set"), s.get("cpu_us_per_request"), r["ok"]))
EOF
echo "presence.sh: JSON lines appended to $RESULTS" >&2
exit $FAILED
