#!/usr/bin/env bash
# bench/run.sh: rtgate against nats-server's WebSocket listener, side by side, in one invocation
# (BENCHMARKS.md has the results and how to read them).
#
# For every scenario it starts fresh servers:
#   - nats-server 2.9 with its WebSocket listener and JetStream (fresh temp store, loopback,
#     free ports);
#   - rtgate with the NATS engine (--nats, pointed at that nats-server);
#   - rtgate with the memory engine;
# then runs the same load three ways:
#   nats-ws      subscribers speak NATS over nats-server's WebSocket listener, a NATS TCP
#                publisher publishes rtgate.eph.<channel>              (the baseline)
#   rtgate-nats  subscribers speak rtgate's protocol to rtgate, the same NATS TCP publisher
#                publishes to the same subjects; rtgate's NATS engine carries them (like for like)
#   rtgate-mem   rtgate's memory engine, published through a WebSocket client (`pub`): NOT like
#                for like (no NATS hop; rtgate also answers every pub), kept for comparison
# and kills every process it started, by pid. Results: bench/out/results.jsonl (one JSON line
# per run, `label` = scenario/variant), bench/out/<scenario>-<variant>.svg (latency by
# percentile, rtgate-load's own plot), bench/out/latency-<scenario>.svg (the three variants in
# one plot), bench/out/cpu-per-delivery.svg, bench/out/table.md (printed at the end).
#
# Servers (rtgate and nats-server) are pinned to CPU $SERVER_CPUS (default 0) and the load
# generator to CPU $CLIENT_CPUS (default 1) with taskset, so the client never takes the server's
# core and each server has exactly one core (nats-server then runs with GOMAXPROCS 1, which Go
# derives from the affinity mask). --no-pin turns this off.
#
# Usage: bench/run.sh [--quick] [--no-pin] [--only REGEX]
#   --quick     shorter windows (smoke test of the script, numbers not for publishing)
#   --only RE   run only the scenarios whose name matches RE (e.g. 'fanout-1k|idle'); their
#               lines are added to results.jsonl and replace earlier ones in the tables
# Environment: BUILD (default build-bench), RTGATE, LOAD, NATS_SERVER, OUT.
# The whole default run takes about 7-8 minutes and stops by itself (hard limit 9.5 minutes).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port
bench_paths build-bench # BUILD, RTGATE, LOAD, NATS_SERVER, OUT, SERVER_CPUS, CLIENT_CPUS (lib.sh)
PIN=1
QUICK=0
ONLY=""
LIMIT_S=570

while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --no-pin) PIN=0 ;;
    --only) ONLY="$2"; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

for b in "$RTGATE" "$LOAD"; do
    [ -x "$b" ] || { echo "run.sh: $b is missing; build first:" >&2
        echo "  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF && cmake --build build-bench -j2 --target rtgate-load rtgate" >&2
        exit 2; }
done
command -v "$NATS_SERVER" > /dev/null || { echo "run.sh: nats-server not found" >&2; exit 2; }
"$RTGATE" --help | grep -q -- '--nats ' || echo "run.sh: warning: this rtgate has no --nats: rtgate-nats runs will fail" >&2

mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/rtgate-bench.XXXXXX)
STARTED=$SECONDS
PIDS=()
FAILED=0

cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2> /dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2> /dev/null
    done
    PIDS=()
    if [ "$FAILED" = 1 ]; then
        echo "run.sh: some runs were not ok; server logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

# Run in the background as `pin_server CMD... &`: exec keeps $! the server's own pid (taskset
# execs the command too), which --server-pid needs.
pin_server() { if [ "$PIN" = 1 ]; then exec taskset -c "$SERVER_CPUS" "$@"; else exec "$@"; fi; }
pin_client() { if [ "$PIN" = 1 ]; then taskset -c "$CLIENT_CPUS" "$@"; else "$@"; fi; }


# wait_port PORT SECONDS: until something accepts on 127.0.0.1:PORT.

# wait_log FILE TEXT SECONDS
wait_log() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        grep -q -- "$2" "$1" 2> /dev/null && return 0
        sleep 0.1
    done
    return 1
}

GW_OPTS=(--ephemeral 'load.>' --pub-rate 1000000 --pub-burst 1000000 --msg-rate 1000000
    --msg-burst 1000000 --ip-conn-rate 0 --log-level warn)

# Starts nats-server, rtgate (NATS engine) and rtgate (memory engine) for scenario $1.
start_servers() {
    local name=$1 dir="$TMP/$1"
    mkdir -p "$dir/js"
    NPORT=$(free_port) WSPORT=$(free_port) MPORT=$(free_port) GWN_PORT=$(free_port) GWM_PORT=$(free_port)
    cat > "$dir/nats.conf" << EOT
listen: 127.0.0.1:$NPORT
http: 127.0.0.1:$MPORT
jetstream { store_dir: "$dir/js", max_memory_store: 64MB, max_file_store: 256MB }
websocket { listen: "127.0.0.1:$WSPORT", no_tls: true, compression: false }
EOT
    pin_server "$NATS_SERVER" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    wait_log "$dir/nats.log" "Server is ready" 15 && wait_port "$WSPORT" 5 ||
        { echo "run.sh: nats-server did not start:" >&2; tail -5 "$dir/nats.log" >&2; return 1; }
    pin_server "$RTGATE" --listen "127.0.0.1:$GWN_PORT" --node-id bench-nats --nats "nats://127.0.0.1:$NPORT" \
        "${GW_OPTS[@]}" > "$dir/rtgate-nats.log" 2>&1 &
    GWN_PID=$!
    PIDS+=("$GWN_PID")
    pin_server "$RTGATE" --listen "127.0.0.1:$GWM_PORT" --node-id bench-mem "${GW_OPTS[@]}" \
        > "$dir/rtgate-mem.log" 2>&1 &
    GWM_PID=$!
    PIDS+=("$GWM_PID")
    wait_ready "$GWN_PORT" 10 || { echo "run.sh: rtgate --nats did not get ready:" >&2; tail -5 "$dir/rtgate-nats.log" >&2; return 1; }
    wait_port "$GWM_PORT" 10 || { echo "run.sh: rtgate did not start:" >&2; tail -5 "$dir/rtgate-mem.log" >&2; return 1; }
    return 0
}

stop_servers() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2> /dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2> /dev/null
    done
    PIDS=()
}

# run_variant SCENARIO VARIANT ARGS...: one rtgate-load run, its line appended to results.jsonl.
run_variant() {
    local name=$1 variant=$2
    shift 2
    local args=()
    case "$variant" in
    nats-ws) args=(--target nats-ws --url "ws://127.0.0.1:$WSPORT/" --nats "nats://127.0.0.1:$NPORT"
        --server-pid "$NATS_PID") ;;
    rtgate-nats) args=(--url "ws://127.0.0.1:$GWN_PORT/ws" --publish-via nats --nats "nats://127.0.0.1:$NPORT"
        --server-pid "$GWN_PID" --broker-pid "$NATS_PID") ;;
    rtgate-mem) args=(--url "ws://127.0.0.1:$GWM_PORT/ws" --server-pid "$GWM_PID") ;;
    esac
    if [ "$variant" = rtgate-mem ]; then # it publishes with `pub`: no JetStream publish
        local a rest=()
        for a in "$@"; do [ "$a" = --durable-nats ] || rest+=("$a"); done
        set -- "${rest[@]}"
    fi
    case " $* " in
    *" idle "*) ;;
    *) args+=(--histogram-svg "$OUT/$name-$variant.svg") ;;
    esac
    local t0=$SECONDS
    pin_client "$LOAD" "${args[@]}" "$@" --label "$name/$variant" --json "$OUT/results.jsonl" \
        --timeout 90 -q > /dev/null 2>> "$TMP/load.err"
    local rc=$?
    [ "$rc" = 0 ] || FAILED=1
    printf '  %-14s %-12s exit %d, %3d s\n' "$name" "$variant" "$rc" $((SECONDS - t0)) >&2
    # Other jobs on a shared machine may kill servers by name: say so instead of guessing later.
    local p
    for p in "$NATS_PID" "$GWN_PID" "$GWM_PID"; do
        if ! kill -0 "$p" 2> /dev/null; then
            echo "run.sh: server pid $p is gone (after $name/$variant): its runs are not valid" >&2
            FAILED=1
        fi
    done
}

# scenario NAME ARGS...: fresh servers, the three variants, servers stopped.
scenario() {
    local name=$1
    shift
    if [ -n "$ONLY" ] && ! [[ "$name" =~ $ONLY ]]; then return; fi
    if [ $((SECONDS - STARTED)) -gt $((LIMIT_S - 60)) ]; then
        echo "run.sh: time limit: skipping $name" >&2
        return
    fi
    if ! start_servers "$name"; then
        stop_servers
        return
    fi
    for v in nats-ws rtgate-nats rtgate-mem; do
        run_variant "$name" "$v" "$@"
    done
    stop_servers
}

if [ "$QUICK" = 1 ]; then
    D=(--duration 3 --warmup 1 --drain 3)
    DA=(--duration 2 --warmup 1 --drain 3)
    HOLD=(--duration 2)
else
    D=(--duration 8 --warmup 2 --drain 5)
    DA=(--duration 6 --warmup 1 --drain 5)
    HOLD=(--duration 5)
fi
CR=(--connect-rate 3000)

# A full run starts a new results.jsonl; --only adds to it (table.py takes the last line of each
# scenario/variant, so a rerun replaces the earlier one).
if [ -z "$ONLY" ]; then
    [ -f "$OUT/results.jsonl" ] && mv "$OUT/results.jsonl" "$OUT/results.prev.jsonl"
    : > "$OUT/machine.txt"
else
    echo "--- rerun of '$ONLY':" >> "$OUT/machine.txt"
fi
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null)$(git -C "$ROOT" diff --quiet 2> /dev/null || echo ' + uncommitted changes')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "kernel: $(uname -r)"
    echo "nats-server: $("$NATS_SERVER" --version 2>&1)"
    echo "rtgate: $("$RTGATE" --version 2>&1 | head -1) ($RTGATE)"
    echo "rtgate-load: $LOAD"
    echo "pinning: $([ "$PIN" = 1 ] && echo "servers on CPU $SERVER_CPUS, load generator on CPU $CLIENT_CPUS" || echo none)"
    echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$OUT/machine.txt" >&2

# The headline scenarios (issue 5).
scenario fanout-1k --scenario fanout --subs 1000 --rate 200 "${D[@]}" "${CR[@]}"
scenario fanout-10k --scenario fanout --subs 10000 --rate 50 "${D[@]}" "${CR[@]}"
scenario channels-10k --scenario channels --subs 10000 --rate 2000 "${D[@]}" "${CR[@]}"
scenario idle-10k --scenario idle --subs 10000 "${HOLD[@]}"
# How cost grows: subscribers on one channel (20 msg/s), channels for 10k subscribers, idle
# connections.
scenario subs-100 --scenario fanout --subs 100 --rate 20 "${DA[@]}"
scenario subs-1k --scenario fanout --subs 1000 --rate 20 "${DA[@]}"
scenario subs-10k --scenario fanout --subs 10000 --rate 20 "${DA[@]}" "${CR[@]}"
scenario channels-100 --scenario channels --subs 10000 --channels 100 --rate 2000 "${DA[@]}" "${CR[@]}"
scenario idle-1k --scenario idle --subs 1000 "${HOLD[@]}"
scenario idle-5k --scenario idle --subs 5000 "${HOLD[@]}"
# Durable channels with acks, against subs-1k (ephemeral, same load): rtgate subscribers ack,
# the NATS publisher publishes through JetStream (rtgate.dur.<channel>, acks counted); nats-ws
# subscribers take the same subject with a core SUB (nats-server stores, delivers, no acks).
scenario durable-1k --scenario fanout --subs 1000 --rate 20 --channel-prefix dur --durable-nats "${DA[@]}"
# The highest rate each sustains (p99 < 50 ms, nothing lost), 1k subscribers on one channel:
# fanout-1k above is 200 msg/s.
scenario rate-1k-50 --scenario fanout --subs 1000 --rate 50 "${DA[@]}"
scenario rate-1k-100 --scenario fanout --subs 1000 --rate 100 "${DA[@]}"
scenario rate-1k-150 --scenario fanout --subs 1000 --rate 150 "${DA[@]}"
scenario rate-1k-250 --scenario fanout --subs 1000 --rate 250 "${DA[@]}"

echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
echo "elapsed: $((SECONDS - STARTED)) s" >> "$OUT/machine.txt"
if [ -s "$TMP/load.err" ]; then
    echo "rtgate-load said:" >&2
    sort "$TMP/load.err" | uniq -c | sort -rn | head -20 >&2
fi
python3 "$ROOT/bench/table.py" "$OUT/results.jsonl" > "$OUT/table.md"
python3 "$ROOT/bench/plot.py" "$OUT/results.jsonl" "$OUT"
cat "$OUT/table.md"
echo "run.sh: $((SECONDS - STARTED)) s; results in $OUT" >&2
