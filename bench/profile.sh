#!/usr/bin/env bash
# bench/profile.sh: where rtgate's CPU goes under load (BENCHMARKS.md, "Profile").
#
# For each scenario: fresh nats-server (WebSocket listener + JetStream, temp store, loopback)
# and rtgate with the NATS engine (or the memory engine for *-mem), pinned like bench/run.sh
# (servers on CPU 0, load generator on CPU 1); rtgate-load runs the scenario and, once the
# connections are up and the warm-up is over, `perf record -e cpu-clock -g -p RTGATE` samples
# rtgate for the measured window. Writes bench/out/profile-<scenario>.txt (top symbols, self
# time; then the same by shared object) and kills everything it started, by pid.
#
# Usage: bench/profile.sh [SCENARIO...]
#   scenarios: fanout-1k (default), channels-10k (default), fanout-10k, fanout-1k-mem,
#              channels-10k-mem, subs-1k[-mem] (1k x 20 msg/s), durable-1k[-mem] (the same on a
#              durable channel, with acks),
#              setup-10k (perf samples the set-up of 10k idle connections instead)
# Environment: BUILD (default build-bench), RTGATE, LOAD, NATS_SERVER, OUT, PERF_SECONDS (8),
#   RTGATE_ARGS (extra rtgate options, e.g. "--flush-window-ms 0"), TAG (suffix of the report name),
#   KEEP_PERF=1 (keep perf.data as $OUT/perf-<scenario><TAG>.data for `perf report -i`).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port
bench_paths build-bench # BUILD, RTGATE, LOAD, NATS_SERVER, OUT, SERVER_CPUS, CLIENT_CPUS (lib.sh)
PERF_SECONDS=${PERF_SECONDS:-8}
read -r -a EXTRA <<< "${RTGATE_ARGS:-}"
TAG=${TAG:-}
[ $# -gt 0 ] || set -- fanout-1k channels-10k

command -v perf > /dev/null || { echo "profile.sh: perf not found" >&2; exit 2; }
mkdir -p "$OUT"
bench_start profile # TMP, PIDS, stop_all, pin_server (lib.sh)

for name in "$@"; do
    case "$name" in
    fanout-1k) args=(--scenario fanout --subs 1000 --rate 200) ;;
    fanout-1k-mem) args=(--scenario fanout --subs 1000 --rate 200) ;;
    fanout-10k) args=(--scenario fanout --subs 10000 --rate 50) ;;
    channels-10k | channels-10k-mem) args=(--scenario channels --subs 10000 --rate 2000) ;;
    subs-1k | subs-1k-mem) args=(--scenario fanout --subs 1000 --rate 20) ;;
    durable-1k) args=(--scenario fanout --subs 1000 --rate 20 --channel-prefix dur --durable-nats) ;;
    durable-1k-mem) args=(--scenario fanout --subs 1000 --rate 20 --channel-prefix dur) ;;
    setup-10k) args=(--scenario idle --subs 10000) ;;
    *) echo "profile.sh: unknown scenario $name" >&2; continue ;;
    esac
    dir="$TMP/$name"
    NPORT=$(free_port) WSPORT=$(free_port) GW_PORT=$(free_port)
    nats_conf "$dir" "$NPORT" "$WSPORT"
    pin_server "$NATS_SERVER" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    wait_port "$NPORT" 10 || { echo "profile.sh: nats-server did not start" >&2; stop_all; continue; }
    engine=(--nats "nats://127.0.0.1:$NPORT")
    pub=(--publish-via nats --nats "nats://127.0.0.1:$NPORT")
    if [[ "$name" == *-mem ]]; then
        engine=()
        pub=()
    fi
    pin_server "$RTGATE" --listen "127.0.0.1:$GW_PORT" "${engine[@]}" --ephemeral 'load.>' \
        --pub-rate 1000000 --pub-burst 1000000 --msg-rate 1000000 --msg-burst 1000000 \
        --ip-conn-rate 0 --log-level warn "${EXTRA[@]}" > "$dir/rtgate.log" 2>&1 &
    GW=$!
    PIDS+=("$GW")
    wait_port "$GW_PORT" 10 || { echo "profile.sh: rtgate did not start" >&2; stop_all; continue; }
    subs=${args[3]}
    if [ "$name" = setup-10k ]; then
        # 10k connections at 2000/s: perf covers the 5 s of set-up, then they idle 3 s.
        taskset -c "$CLIENT_CPUS" "$LOAD" --url "ws://127.0.0.1:$GW_PORT/ws" "${args[@]}" \
            --duration 3 --server-pid "$GW" --label "profile/$name" -q > "$dir/load.json" \
            2> "$dir/load.err" &
        LOADPID=$!
        pub=()
    else
        setup_s=$(((subs + 2999) / 3000 + 1))
        taskset -c "$CLIENT_CPUS" "$LOAD" --url "ws://127.0.0.1:$GW_PORT/ws" "${pub[@]}" "${args[@]}" \
            --duration $((PERF_SECONDS + 6)) --warmup 2 --connect-rate 3000 --server-pid "$GW" \
            --label "profile/$name" -q > "$dir/load.json" 2> "$dir/load.err" &
        LOADPID=$!
        sleep $((setup_s + 3)) # perf ends ~4 s before the run does: the closes at the end stay out
    fi
    perf record -e cpu-clock -g -p "$GW" -o "$dir/perf.data" -- sleep "$PERF_SECONDS" \
        > /dev/null 2> "$dir/perf.err"
    wait "$LOADPID"
    {
        echo "# perf record -e cpu-clock -g -p RTGATE, ${PERF_SECONDS} s of: rtgate-load ${pub[*]} ${args[*]}"
        echo "# rtgate: $RTGATE ${engine[*]} ${EXTRA[*]}"
        echo "# run: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d.get("server",{}); print("connected %d, server µs/connection %s, RSS B/conn %s; delivered/s %.0f, lost %d, server µs/delivery %s, cpu_util %s, p50 %.2f ms, p99 %.2f ms" % (d["connected"], s.get("cpu_us_per_connection"), s.get("rss_bytes_per_conn"), d["deliveries_per_s"], d["lost"], s.get("cpu_us_per_delivery"), s.get("cpu_util"), d["latency_us"]["p50"]/1000, d["latency_us"]["p99"]/1000))' "$dir/load.json" 2> /dev/null)"
        echo
        echo "## self time by symbol"
        perf report -i "$dir/perf.data" --stdio --no-children --sort symbol -g none 2> /dev/null |
            grep -v '^#' | grep -v '^$' | head -45
        echo
        echo "## self time by shared object"
        perf report -i "$dir/perf.data" --stdio --no-children --sort dso -g none 2> /dev/null |
            grep -v '^#' | grep -v '^$' | head -12
        echo
        echo "## inclusive (children) by symbol, top 30"
        perf report -i "$dir/perf.data" --stdio --children --sort symbol -g none 2> /dev/null |
            grep -v '^#' | grep -v '^$' | head -30
    } > "$OUT/profile-$name$TAG.txt"
    [ -n "${KEEP_PERF:-}" ] && cp "$dir/perf.data" "$OUT/perf-$name$TAG.data"
    echo "profile.sh: $OUT/profile-$name$TAG.txt" >&2
    stop_all
done
