#!/usr/bin/env bash
# bench/sweep.sh: a rate sweep of the fan-out row (BENCHMARKS.md, "Latency under load"): one
# channel, 1,000 subscribers, from 200k to 1.5M deliveries/s, nats-server's WebSocket listener
# and rtgate side by side, every variant of rtgate in the same invocation, repeated.
#
# For every repetition and rate it starts a fresh nats-server (WebSocket listener + JetStream,
# temp store, loopback, free ports) and runs the nats-ws baseline on it, then one fresh
# `rtgate --nats` per variant, each fed by the same kind of NATS publisher (as bench/window.sh
# does). Variants:
#   old      the rtgate built from --old-rev (default: the commit before the flush window's
#            controller, gateway/flush_window.c, came in), default flags
#   new      $RTGATE, default flags
#   fixed20  $RTGATE with --flush-window-max-ms 20 (the window never grows)
# Servers are pinned to CPU $SERVER_CPUS (0), the load generator to $CLIENT_CPUS (1). rtgate
# runs with --log-level debug so its window changes are counted (quiet in steady state).
# Everything it starts is killed by pid.
#
# Results: $OUT/sweep.jsonl (one rtgate-load line per run, label sweep-TAG/rN/RATE/variant, with
# the run's window changes under "flush_window"), $OUT/sweep-TAG.json (the summary) and
# $OUT/sweep-TAG.md (the table, also printed): per rate and variant, p99 (median of the
# repetitions, and their range), server CPU per delivery and its ratio to nats-server's in the
# same repetition, the largest window used, and in how many runs p99 stayed under 40 ms.
#
# Usage: bench/sweep.sh [--rates "200 400 700 1000 1500"] [--subs 1000] [--reps 3]
#                       [--duration 8] [--variants "old new fixed20"] [--old PATH | --old-rev REV]
#                       [--quiet PCT] [--quick]
#   --rates     messages/s published to the channel; deliveries/s = rate x subs
#   --quiet     before each run, wait (up to 5 min) until the machine was at most PCT% busy over
#               a second (all cores; 0 = do not wait): on a shared machine, runs start in a lull.
#               Each run's line records the busy share it started at (busy_before)
#   --quick     one repetition, 3 s, rates "200 1000": a smoke test of the script, not numbers
# Environment: BUILD (default build-rel), RTGATE, LOAD, NATS_SERVER, OUT (default bench/out/sweep), SERVER_CPUS,
# CLIENT_CPUS (lib.sh); OLD_BUILD (where --old-rev is built, default build-sweep-old-REV).
# Bounded: every rtgate-load run has --timeout 90; the script stops itself after LIMIT_S
# (default 3600) seconds. The default run (5 rates x 3 repetitions x 4 servers) takes about
# 25 minutes.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port, bench_paths
OUT=${OUT:-$ROOT/bench/out/sweep}
bench_paths build-rel  # BUILD, RTGATE, LOAD, NATS_SERVER, OUT, SERVER_CPUS, CLIENT_CPUS
RATES="200 400 700 1000 1500"
SUBS=1000
REPS=3
DURATION=8
VARIANTS="old new fixed20"
OLD=""
OLD_REV=""
QUIET=0
LIMIT_S=${LIMIT_S:-3600}

while [ $# -gt 0 ]; do
    case "$1" in
    --rates) RATES="$2"; shift ;;
    --subs) SUBS="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --variants) VARIANTS="$2"; shift ;;
    --old) OLD="$2"; shift ;;
    --old-rev) OLD_REV="$2"; shift ;;
    --quiet) QUIET="$2"; shift ;;
    --quick) REPS=1; DURATION=3; RATES="200 1000" ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "sweep.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
for b in "$RTGATE" "$LOAD"; do
    [ -x "$b" ] || { echo "sweep.sh: $b is missing (cmake --build $BUILD --target rtgate rtgate-load)" >&2; exit 2; }
done

# The old rtgate: given, or built once from a revision (kept for the next run).
if [[ " $VARIANTS " == *" old "* ]] && [ -z "$OLD" ]; then
    if [ -z "$OLD_REV" ]; then
        added=$(git -C "$ROOT" log --diff-filter=A --format=%H -- gateway/flush_window.c | tail -1)
        [ -n "$added" ] || { echo "sweep.sh: no commit adds gateway/flush_window.c: give --old-rev" >&2; exit 2; }
        OLD_REV=$(git -C "$ROOT" rev-parse --short "$added^")
    fi
    OLD_BUILD=${OLD_BUILD:-$ROOT/build-sweep-old-$OLD_REV}
    OLD=$OLD_BUILD/gateway/rtgate
    if [ ! -x "$OLD" ]; then
        echo "sweep.sh: building rtgate at $OLD_REV into $OLD_BUILD" >&2
        rm -rf "$OLD_BUILD.src" && mkdir -p "$OLD_BUILD.src" &&
            git -C "$ROOT" archive "$OLD_REV" | tar -x -C "$OLD_BUILD.src" &&
            cmake -S "$OLD_BUILD.src" -B "$OLD_BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF > /dev/null &&
            cmake --build "$OLD_BUILD" -j2 --target rtgate > /dev/null ||
            { echo "sweep.sh: could not build $OLD_REV" >&2; exit 2; }
    fi
fi

mkdir -p "$OUT"
bench_start sweep # TMP, PIDS, stop_all, pin_server (lib.sh)
STARTED=$SECONDS

GW_OPTS=(--ephemeral 'load.>' --pub-rate 1000000 --pub-burst 1000000 --msg-rate 1000000
    --msg-burst 1000000 --ip-conn-rate 0 --log-level debug)
JSON="$OUT/sweep.jsonl"
RUN_TAG="sweep-$(date -u +%Y%m%dT%H%M%SZ)"
echo "sweep.sh: $RUN_TAG, git $(git -C "$ROOT" rev-parse --short HEAD), old ${OLD_REV:-$OLD}, loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# busy_pct: how busy the machine was over the last second, in % of all cores (/proc/stat).
busy_pct() {
    local a b
    read -r -a a < /proc/stat
    sleep 1
    read -r -a b < /proc/stat
    python3 -c 'import sys
a = list(map(int, sys.argv[1].split())); b = list(map(int, sys.argv[2].split()))
d = [y - x for x, y in zip(a, b)]
print(round(100 * (1 - (d[3] + d[4]) / max(1, sum(d)))))' "${a[*]:1}" "${b[*]:1}"
}

# wait_quiet: with --quiet, waits for a second at most $QUIET% busy (5 min at most); BUSY_BEFORE.
wait_quiet() {
    BUSY_BEFORE=$(busy_pct)
    [ "$QUIET" -gt 0 ] || return 0
    local end=$((SECONDS + 300))
    while [ "$BUSY_BEFORE" -gt "$QUIET" ] && [ $SECONDS -lt $end ]; do
        sleep 2
        BUSY_BEFORE=$(busy_pct)
    done
}

# load LABEL ARGS...: one rtgate-load run pinned to the client CPU; its JSON line goes to $TMP/last.
load() {
    local label=$1
    shift
    wait_quiet
    taskset -c "$CLIENT_CPUS" "$LOAD" "$@" --scenario fanout --subs "$SUBS" --duration "$DURATION" \
        --warmup 2 --drain 5 --connect-rate 3000 --label "$RUN_TAG/$label" --timeout 90 -q \
        > "$TMP/last" 2>> "$TMP/load.err"
    local rc=$?
    printf '  %-28s exit %d (machine %s%% busy before)\n' "$label" "$rc" "$BUSY_BEFORE" >&2
}

# keep LOG: appends the last run's line to $JSON with the window changes rtgate logged.
keep() {
    python3 - "$TMP/last" "$1" "$BUSY_BEFORE" >> "$JSON" << 'EOF'
import json, re, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
if lines:
    r = json.loads(lines[-1])
    r["busy_before"] = int(sys.argv[3]) / 100
    if sys.argv[2] != "-":
        ws = [int(m) for m in re.findall(r"flush_window busy=\S+ window_ms=(\d+)", open(sys.argv[2]).read())]
        r["flush_window"] = {"changes": len(ws), "max_ms": max(ws, default=None), "last_ms": ws[-1] if ws else None}
    print(json.dumps(r))
EOF
}

for rep in $(seq 1 "$REPS"); do
    for rate in $RATES; do
        [ $((SECONDS - STARTED)) -lt $((LIMIT_S - 120)) ] || { echo "sweep.sh: time limit" >&2; break 2; }
        dir="$TMP/r$rep-$rate"
        NPORT=$(free_port) WSPORT=$(free_port)
        nats_conf "$dir" "$NPORT" "$WSPORT"
        pin_server "$NATS_SERVER" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
        NATS=$!
        PIDS+=("$NATS")
        wait_port "$WSPORT" 10 || { echo "sweep.sh: nats-server did not start" >&2; stop_all; continue; }
        load "r$rep/$rate/nats-ws" --target nats-ws --url "ws://127.0.0.1:$WSPORT/" \
            --nats "nats://127.0.0.1:$NPORT" --server-pid "$NATS" --rate "$rate"
        keep -
        for v in $VARIANTS; do
            case "$v" in
            old) bin=$OLD; opts=() ;;
            new) bin=$RTGATE; opts=() ;;
            fixed20) bin=$RTGATE; opts=(--flush-window-max-ms 20) ;;
            *) echo "sweep.sh: unknown variant $v" >&2; continue ;;
            esac
            GWPORT=$(free_port)
            pin_server "$bin" --listen "127.0.0.1:$GWPORT" --nats "nats://127.0.0.1:$NPORT" \
                "${GW_OPTS[@]}" "${opts[@]}" > "$dir/rtgate-$v.log" 2>&1 &
            GW=$!
            PIDS+=("$GW")
            wait_ready "$GWPORT" 10 || { echo "sweep.sh: rtgate ($v) did not get ready" >&2; kill "$GW"; wait "$GW"; forget_pid "$GW"; continue; }
            load "r$rep/$rate/$v" --url "ws://127.0.0.1:$GWPORT/ws" --publish-via nats \
                --nats "nats://127.0.0.1:$NPORT" --broker-pid "$NATS" --server-pid "$GW" --rate "$rate"
            kill "$GW" 2> /dev/null
            wait "$GW" 2> /dev/null
            forget_pid "$GW"
            keep "$dir/rtgate-$v.log"
        done
        stop_all
    done
done
[ -s "$TMP/load.err" ] && sort "$TMP/load.err" | uniq -c | sort -rn | head -10 >&2

python3 "$ROOT/bench/sweep_table.py" "$JSON" "$RUN_TAG" "$SUBS" \
    "git $(git -C "$ROOT" rev-parse --short HEAD), old ${OLD_REV:-$OLD}; loadavg $LOADAVG_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end" \
    "$OUT/$RUN_TAG.json" "$OUT/$RUN_TAG.md"
cat "$OUT/$RUN_TAG.md"
echo "sweep.sh: $((SECONDS - STARTED)) s; $OUT/$RUN_TAG.md, $OUT/$RUN_TAG.json, $JSON" >&2
