#!/usr/bin/env bash
# bench/window.sh: rtgate's --flush-window-ms against nats-server's WebSocket listener, in one
# invocation (BENCHMARKS.md, "Write coalescing").
#
# For every load (default: fan-out 1k x 200 msg/s, 10k x 50 msg/s, 10k x 20 msg/s) it starts a
# fresh nats-server (WebSocket listener + JetStream, temp store, loopback, free ports), runs the
# nats-ws baseline on it, then one fresh rtgate --nats per flush window, each fed by the same
# NATS publisher (like bench/run.sh's nats-ws and rtgate-nats variants). Servers are pinned to
# CPU $SERVER_CPUS (0), the load generator to $CLIENT_CPUS (1). Everything it starts is killed by
# pid. Lines go to $OUT/window.jsonl (label = load/variant); a table is printed at the end.
#
# Usage: bench/window.sh [--windows "0 1 2 5 10"] [--loads "1k-200 10k-50 10k-20"]
#                        [--variants "LABEL=OPTIONS;..."] [--duration S] [--memory]
#   --loads     SUBS-RATE is fan-out (SUBS subscribers of one channel, RATE msg/s); chSUBS-RATE
#               is many channels (SUBS subscribers, one channel each, RATE msg/s in all);
#               durSUBS-RATE is fan-out on a durable channel, the subscribers acking
#   --variants  instead of one rtgate per window, one per LABEL with those rtgate options, e.g.
#               "w0=--nats-read-window-ms 0;w2=--nats-read-window-ms 2"; options starting with
#               @PATH run that rtgate binary instead of $RTGATE, e.g. "main=@/tmp/main/rtgate;new="
#   --memory   rtgate with the memory engine instead (publishes with `pub` over WebSocket)
# Environment: BUILD (default build-rel), RTGATE, LOAD, NATS_SERVER, OUT, RTGATE_ARGS (more
# rtgate options, e.g. "--flush-window-max-ms 20"), LOAD_ARGS (more rtgate-load options, e.g.
# "--ack-delay-ms 500"), VARIANT (prefix of the variant labels).
# Bounded: every rtgate-load run has --timeout 90; the script stops itself after 15 minutes.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port
bench_paths build-rel # BUILD, RTGATE, LOAD, NATS_SERVER, OUT, SERVER_CPUS, CLIENT_CPUS (lib.sh)
WINDOWS="0 1 2 5 10"
LOADS="1k-200 10k-50 10k-20"
DURATION=8
MEMORY=0
VARIANTS=""
LIMIT_S=900
read -r -a EXTRA <<< "${RTGATE_ARGS:-}"
read -r -a LOAD_EXTRA <<< "${LOAD_ARGS:-}"
VARIANT=${VARIANT:-}

while [ $# -gt 0 ]; do
    case "$1" in
    --windows) WINDOWS="$2"; shift ;;
    --variants) VARIANTS="$2"; shift ;;
    --loads) LOADS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --memory) MEMORY=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "window.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
for b in "$RTGATE" "$LOAD"; do
    [ -x "$b" ] || { echo "window.sh: $b is missing (cmake --build build-rel --target rtgate rtgate-load)" >&2; exit 2; }
done

mkdir -p "$OUT"
bench_start window # TMP, PIDS, stop_all, pin_server (lib.sh)
STARTED=$SECONDS

GW_OPTS=(--ephemeral 'load.>' --pub-rate 1000000 --pub-burst 1000000 --msg-rate 1000000
    --msg-burst 1000000 --ip-conn-rate 0 --log-level warn)
JSON="$OUT/window.jsonl"
RUN_TAG="window-$(date -u +%Y%m%dT%H%M%SZ)"
echo "window.sh: $RUN_TAG, git $(git -C "$ROOT" rev-parse --short HEAD), loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# load NAME VARIANT ARGS...: one rtgate-load run pinned to the client CPU.
load() {
    local name=$1 variant=$2
    shift 2
    taskset -c "$CLIENT_CPUS" "$LOAD" "$@" "${LOAD_EXTRA[@]}" --duration "$DURATION" --warmup 2 --drain 5 \
        --connect-rate 3000 --label "$RUN_TAG/$name/$variant" --json "$JSON" --timeout 90 -q \
        > /dev/null 2>> "$TMP/load.err"
    printf '  %-8s %-10s exit %d\n' "$name" "$variant" $? >&2
}

for name in $LOADS; do
    [ $((SECONDS - STARTED)) -lt $((LIMIT_S - 90)) ] || { echo "window.sh: time limit" >&2; break; }
    subs=${name%-*}
    rate=${name#*-}
    scen=fanout
    more=()
    case "$subs" in
    ch*) scen=channels; subs=${subs#ch} ;;
    dur*) subs=${subs#dur}; more=(--channel-prefix dur) ;;
    esac
    subs=${subs/k/000}
    args=(--scenario "$scen" --subs "$subs" --rate "$rate" "${more[@]}")
    [ ${#more[@]} -gt 0 ] && [ "$MEMORY" = 0 ] && args+=(--durable-nats)
    dir="$TMP/$name"
    NPORT=$(free_port) WSPORT=$(free_port)
    nats_conf "$dir" "$NPORT" "$WSPORT"
    pin_server "$NATS_SERVER" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
    NATS=$!
    PIDS+=("$NATS")
    wait_port "$WSPORT" 10 || { echo "window.sh: nats-server did not start" >&2; stop_all; continue; }
    load "$name" nats-ws --target nats-ws --url "ws://127.0.0.1:$WSPORT/" \
        --nats "nats://127.0.0.1:$NPORT" --server-pid "$NATS" "${args[@]}"
    labels=() options=()
    if [ -n "$VARIANTS" ]; then
        IFS=';' read -r -a vs <<< "$VARIANTS"
        for v in "${vs[@]}"; do labels+=("${v%%=*}"); options+=("${v#*=}"); done
    else
        for w in $WINDOWS; do labels+=("w$w"); options+=("--flush-window-ms $w"); done
    fi
    for i in "${!labels[@]}"; do
        read -r -a vopts <<< "${options[$i]}"
        bin=$RTGATE
        v0=${vopts[0]:-}
        if [ "${v0#@}" != "$v0" ]; then bin=${v0#@}; vopts=("${vopts[@]:1}"); fi
        w=${labels[$i]}
        GWPORT=$(free_port)
        engine=(--nats "nats://127.0.0.1:$NPORT")
        pub=(--publish-via nats --nats "nats://127.0.0.1:$NPORT" --broker-pid "$NATS")
        if [ "$MEMORY" = 1 ]; then engine=(); pub=(); fi
        pin_server "$bin" --listen "127.0.0.1:$GWPORT" "${engine[@]}" "${GW_OPTS[@]}" \
            "${vopts[@]}" "${EXTRA[@]}" > "$dir/rtgate-$w.log" 2>&1 &
        GW=$!
        PIDS+=("$GW")
        wait_ready "$GWPORT" 10 || { echo "window.sh: rtgate did not get ready" >&2; kill "$GW"; wait "$GW"; forget_pid "$GW"; continue; }
        load "$name" "${VARIANT}$w" --url "ws://127.0.0.1:$GWPORT/ws" "${pub[@]}" --server-pid "$GW" "${args[@]}"
        kill "$GW" 2> /dev/null
        wait "$GW" 2> /dev/null
        forget_pid "$GW"
    done
    stop_all
done
[ -s "$TMP/load.err" ] && sort "$TMP/load.err" | uniq -c | sort -rn | head -10 >&2

python3 - "$JSON" "$RUN_TAG" << 'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("label", "").startswith(sys.argv[2] + "/")]
base = {}
print("| load | variant | delivered/s | lost | p50 ms | p99 ms | server µs/delivery | ratio to nats-ws | server cores | msgs/frame | ok |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    _, load, variant = r["label"].split("/")
    s = r.get("server", {})
    cpu = s.get("cpu_us_per_delivery")
    if variant == "nats-ws":
        base[load] = cpu
    d = r.get("detail", {})
    mpf = d.get("msgs_in", 0) / d["frames_in"] if d.get("frames_in") else 0
    ratio = "%.2f" % (cpu / base[load]) if cpu and base.get(load) and variant != "nats-ws" else "-"
    lat = r.get("latency_us", {})
    print("| %s | %s | %.0f | %d | %.2f | %.2f | %s | %s | %s | %.1f | %s |" % (
        load, variant, r.get("deliveries_per_s", 0), r.get("lost", 0), lat.get("p50", 0) / 1000,
        lat.get("p99", 0) / 1000, "%.2f" % cpu if cpu else "-", ratio, s.get("cpu_util", "-"),
        mpf, "yes" if r.get("ok") else "NO"))
EOF
echo "window.sh: $((SECONDS - STARTED)) s" >&2
