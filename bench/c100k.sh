#!/usr/bin/env bash
# bench/c100k.sh: 100k concurrent WebSocket connections on one machine (issue 5), and the
# memory per connection against 10k (BENCHMARKS.md, "100k connections").
#
# No process may hold more than 20,000 fds here, so:
#   - rtgate runs as --workers N processes sharing one port (SO_REUSEPORT; N defaults to
#     ceil(conns / 15000), each under its max_connections = fd limit - 256). --workers > 1
#     needs --nats: a nats-server from the Debian package runs on a free loopback port (temp
#     store, no JetStream traffic; it is only the workers' engine);
#   - rtgate-load forks one client process per 15000 connections and binds them round-robin to
#     loopback source addresses 127.0.0.2, 127.0.0.3, ... (one per 5000 connections), since one
#     source address holds about 28k connections to one port.
# Two runs, fresh servers each: $SMALL (10k) connections to ONE worker, then $CONNS (100k) to N
# workers; both idle (connect, hold $HOLD s, close; --idle-sub adds one subscription each).
# The server's RSS is summed over every worker process (the supervisor is not sampled: it holds
# no connection). Results: $OUT/c100k.jsonl (labels c100k/<n>) and a table on stdout.
#
# Usage: bench/c100k.sh [--conns N] [--small N] [--workers N] [--hold S] [--connect-rate N]
#                       [--idle-sub]
# Environment: BUILD (default build-rel), RTGATE, LOAD, NATS_SERVER, OUT.
# Bounded: each rtgate-load run has --timeout; the whole script stops itself after $LIMIT_S
# (300 s) and kills everything it started, by pid (the supervisor and every worker).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port
bench_paths build-rel # BUILD, RTGATE, LOAD, NATS_SERVER, OUT, SERVER_CPUS, CLIENT_CPUS (lib.sh)
CONNS=100000
SMALL=10000
WORKERS=0
HOLD=5
RATE=4000
IDLE_SUB=()
LIMIT_S=300

while [ $# -gt 0 ]; do
    case "$1" in
    --conns) CONNS="$2"; shift ;;
    --small) SMALL="$2"; shift ;;
    --workers) WORKERS="$2"; shift ;;
    --hold) HOLD="$2"; shift ;;
    --connect-rate) RATE="$2"; shift ;;
    --idle-sub) IDLE_SUB=(--idle-sub) ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "c100k.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$WORKERS" -gt 0 ] || WORKERS=$(((CONNS + 14999) / 15000))
for b in "$RTGATE" "$LOAD"; do
    [ -x "$b" ] || { echo "c100k.sh: $b is missing (cmake --build build-rel --target rtgate rtgate-load)" >&2; exit 2; }
done
command -v "$NATS_SERVER" > /dev/null || { echo "c100k.sh: nats-server not found (apt-get install nats-server)" >&2; exit 2; }

mkdir -p "$OUT"
bench_start c100k # TMP, PIDS (everything started here, workers included), stop_all (lib.sh)
STOP_GRACE_S=8
STARTED=$SECONDS
# The hard limit: a watchdog that interrupts this script (which then cleans up).
(sleep "$LIMIT_S"; kill -TERM $$ 2> /dev/null) &
WATCHDOG=$!


NPORT=$(free_port)
nats_conf "$TMP" "$NPORT"
"$NATS_SERVER" -c "$TMP/nats.conf" > "$TMP/nats.log" 2>&1 &
PIDS+=($!)
wait_port "$NPORT" 10 || { echo "c100k.sh: nats-server did not start" >&2; exit 1; }

JSON="$OUT/c100k.jsonl"
TAG="c100k-$(date -u +%Y%m%dT%H%M%SZ)"
echo "c100k.sh: $TAG, git $(git -C "$ROOT" rev-parse --short HEAD), fd limit $(ulimit -n), somaxconn $(cat /proc/sys/net/core/somaxconn)" >&2

# run N WORKERS: fresh rtgate --workers W, N idle connections, workers' pids sampled.
run() {
    local n=$1 w=$2 port
    port=$(free_port)
    "$RTGATE" --listen "127.0.0.1:$port" --workers "$w" --nats "nats://127.0.0.1:$NPORT" \
        --ip-conn-rate 0 --log-level warn --drain-ms 0 --drain-timeout-ms 3000 \
        > "$TMP/rtgate-$n.log" 2>&1 &
    local sup=$!
    PIDS+=("$sup")
    wait_port "$port" 10 || { echo "c100k.sh: rtgate did not start" >&2; tail -5 "$TMP/rtgate-$n.log" >&2; return 1; }
    local kids="" end=$((SECONDS + 10))
    [ "$w" -gt 1 ] || { kids=$sup; end=0; } # one worker: rtgate does not fork
    while [ $SECONDS -lt $end ]; do
        kids=$(ps --ppid "$sup" -o pid= | tr -d ' ' | paste -sd, -)
        [ "$(echo "$kids" | tr ',' '\n' | grep -c .)" -ge "$w" ] && break
        sleep 0.2
    done
    local k
    for k in ${kids//,/ }; do PIDS+=("$k"); done
    # Each worker is listening once its port answers; give the slowest a moment.
    sleep 1
    echo "c100k.sh: $n connections -> $w worker(s) (pids $kids)" >&2
    # How the kernel spread the connections over the workers: each one's open fds, sampled
    # during the hold (set-up takes about n / connect-rate seconds).
    (sleep $((n / RATE + 3))
        for k in ${kids//,/ }; do
            printf '  worker %s: %s fds, RSS %s kB (during the hold)\n' "$k" \
                "$(ls /proc/"$k"/fd 2> /dev/null | wc -l)" \
                "$(awk '/VmRSS/ {print $2}' /proc/"$k"/status 2> /dev/null)" >&2
        done) &
    local sampler=$!
    "$LOAD" --url "ws://127.0.0.1:$port/ws" --scenario idle --subs "$n" "${IDLE_SUB[@]}" \
        --duration "$HOLD" --connect-rate "$RATE" --setup-timeout 60 --server-pid "$kids" \
        --label "$TAG/$n" --json "$JSON" --timeout $((n / RATE + HOLD + 60)) -q \
        > /dev/null 2>> "$TMP/load.err"
    echo "c100k.sh: rtgate-load exit $?" >&2
    kill "$sampler" 2> /dev/null
    wait "$sampler" 2> /dev/null
    kill "$sup" 2> /dev/null
    local stop_end=$((SECONDS + 10))
    while kill -0 "$sup" 2> /dev/null && [ $SECONDS -lt $stop_end ]; do sleep 0.2; done
    for k in "$sup" ${kids//,/ }; do kill -9 "$k" 2> /dev/null; done
    wait "$sup" 2> /dev/null
}

run "$SMALL" 1
run "$CONNS" "$WORKERS"
kill "$WATCHDOG" 2> /dev/null
[ -s "$TMP/load.err" ] && sort "$TMP/load.err" | uniq -c | sort -rn | head -10 >&2

python3 - "$JSON" "$TAG" << 'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("label", "").startswith(sys.argv[2] + "/")]
print("| connections | gateway workers | client workers | source addrs | connected | errors | time to connect s | server µs/conn set-up | server RSS kB after set-up | RSS B/conn | ok |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    s = r.get("server", {})
    print("| %d | %d | %d | %d | %d | %d | %.1f | %.0f | %s | %.0f | %s |" % (
        r["connections"], len(s.get("pids", [])), r.get("workers", 0), r.get("source_addrs", 0),
        r["connected"], r.get("connect_errors", 0) + r.get("handshake_failures", 0) + r.get("setup_errors", 0),
        r.get("time_to_connect_s", 0), s.get("cpu_us_per_connection", 0) or 0,
        s.get("rss_kb_after_setup", "-"), s.get("rss_bytes_per_conn", 0) or 0,
        "yes" if r.get("ok") else "NO"))
EOF
echo "c100k.sh: $((SECONDS - STARTED)) s" >&2
