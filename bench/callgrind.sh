#!/usr/bin/env bash
# bench/callgrind.sh: instructions (Ir) per delivery and per connection set-up, from
# valgrind's callgrind (issue 5; BENCHMARKS.md "Callgrind"). perf (bench/profile.sh) says
# where the time goes, kernel included; callgrind counts every userland instruction and
# every call exactly, so it answers "how much work is one delivery" independent of the
# machine's load, and how often send(), epoll_ctl(), malloc() and lws's log calls run.
#
# It builds nothing. Build first, once, with optimisation and debug info (the default
# build type of CMakeLists.txt is RelWithDebInfo, -O2 -g):
#   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF
#   cmake --build build-rel -j2 --target rtgate rtgate-load
#
# For each scenario: rtgate (memory engine, loopback, a free port) under
#   valgrind --tool=callgrind --callgrind-out-file=... (callgrind is ~50x slower in
# userland, so the loads are small), and rtgate-load drives it. The run is cut into
# parts with `callgrind_control --dump` so each part's Ir can be divided by what happened
# in it:
#   part 1 "startup":  rtgate starting until it listens
#   part 2 "setup":    from the load tool's start until it reports every connection ready
#                      (TCP, HTTP upgrade, `connect`, `sub`)
#   part 3 "run":      publishing, warm-up included, until 0.5 s before the last slot
#                      (idle: the hold, until 0.5 s before its end)
#   final "teardown":  the last deliveries, the clients closing, then SIGTERM: rtgate
#                      drains and exits (callgrind writes the last part on exit)
# Deliveries and connections are counted from the calls callgrind saw (sink_deliver:
# one delivery to one subscriber; gw_session_open: one WebSocket session), so a dump
# that lands a little late does not skew the per-delivery figure.
#
# Scenarios (default: all five; the whole run takes about 2 minutes):
#   fanout          200 subscribers on one channel, 1 publisher x 20 msg/s, 10 s (+2 s warm-up)
#   fanout-batched  the same with --flush-window-ms 200 --flush-window-max-ms 200: several
#                   messages per frame and per send(), to compare with fanout's one
#   channels        500 subscribers on 500 channels, 1 publisher x 100 msg/s, 10 s (+2 s)
#   setup           1000 idle connections (connect + sub), held 2 s: Ir per connection
#                   set-up (part 2) and per close (final part)
#   setup-fd2k      setup with rtgate's fd limit at 2048 instead of the shell's (the cost
#                   of a close grows with the fd limit: see the report)
#
# Writes OUT/<scenario>.txt (default OUT=bench/out/callgrind): the load tool's result, Ir
# per part, Ir per delivery or connection by object, call counts, rtgate's top functions,
# and callgrind_annotate's top 40 functions by self and by inclusive Ir. The raw
# callgrind.out files stay in a temporary directory that is removed, unless KEEP=DIR.
#
# Usage: bench/callgrind.sh [fanout|fanout-batched|channels|setup|setup-fd2k]...
# Environment: BUILD (default build-rel), RTGATE, LOAD, OUT, KEEP, RTGATE_ARGS (extra
#   rtgate options), VALGRIND_ARGS (extra valgrind options).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port
BUILD=${BUILD:-$ROOT/build-rel}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
RTGATE=${RTGATE:-$BUILD/gateway/rtgate}
LOAD=${LOAD:-$BUILD/loadtest/rtgate-load}
OUT=${OUT:-$ROOT/bench/out/callgrind}
KEEP=${KEEP:-}
read -r -a EXTRA <<< "${RTGATE_ARGS:-}"
read -r -a VGEXTRA <<< "${VALGRIND_ARGS:-}"
SUMMARY=$ROOT/bench/callgrind_summary.py
[ $# -gt 0 ] || set -- fanout fanout-batched channels setup setup-fd2k

for tool in valgrind callgrind_control callgrind_annotate python3; do
    command -v "$tool" > /dev/null || { echo "callgrind.sh: $tool not found" >&2; exit 2; }
done
for bin in "$RTGATE" "$LOAD"; do
    [ -x "$bin" ] || { echo "callgrind.sh: $bin not built (see the top of this script)" >&2; exit 2; }
done
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/rtgate-callgrind.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null; done
    PIDS=()
}
finish() {
    cleanup
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ && echo "callgrind.sh: raw files in $KEEP" >&2
    fi
    rm -rf "$TMP"
}
trap finish EXIT
trap 'echo "callgrind.sh: interrupted" >&2; exit 130' INT TERM

# wait_for FILE PATTERN SECONDS PID: until FILE has a line matching PATTERN, or PID is gone.
wait_for() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        grep -q -- "$2" "$1" 2> /dev/null && return 0
        kill -0 "$4" 2> /dev/null || { grep -q -- "$2" "$1" 2> /dev/null; return; }
        sleep 0.05
    done
    return 1
}
dump() { # dump PID NAME: callgrind writes the counts so far as the next numbered part
    callgrind_control --dump="$2" "$1" > /dev/null 2>&1 ||
        echo "callgrind.sh: callgrind_control --dump=$2 failed" >&2
}

for name in "$@"; do
    gwx=() fdlimit=
    case "$name" in
    fanout) args=(--scenario fanout --subs 200 --rate 20 --duration 10 --warmup 2 --connect-rate 200) hold=12 ;;
    fanout-batched)
        args=(--scenario fanout --subs 200 --rate 20 --duration 10 --warmup 2 --connect-rate 200) hold=12
        gwx=(--flush-window-ms 200 --flush-window-max-ms 200) ;;
    channels) args=(--scenario channels --subs 500 --rate 100 --duration 10 --warmup 2 --connect-rate 200) hold=12 ;;
    setup) args=(--scenario idle --subs 1000 --idle-sub --channels 100 --duration 2 --connect-rate 200) hold=2 ;;
    setup-fd2k)
        args=(--scenario idle --subs 1000 --idle-sub --channels 100 --duration 2 --connect-rate 200) hold=2
        fdlimit=2048 ;;
    *) echo "callgrind.sh: unknown scenario $name" >&2; continue ;;
    esac
    dir="$TMP/$name"
    mkdir -p "$dir"
    PORT=$(free_port)
    gw=("$RTGATE" --listen "127.0.0.1:$PORT" --ephemeral 'load.>'
        --pub-rate 1000000 --pub-burst 1000000 --msg-rate 1000000 --msg-burst 1000000
        --ip-conn-rate 0 --log-level warn --drain-ms 100 --drain-timeout-ms 5000 "${gwx[@]}"
        "${EXTRA[@]}")
    echo "callgrind.sh: $name: starting rtgate under callgrind on 127.0.0.1:$PORT" >&2
    # setup-fd2k: the same as setup with the fd limit at 2048 (ulimit -n in a shell that
    # then execs valgrind, so $! is still rtgate's pid).
    bash -c '[ -z "$1" ] || ulimit -n "$1" || exit 2; shift; exec "$@"' _ "$fdlimit" \
        valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "${VGEXTRA[@]}" \
        "${gw[@]}" > "$dir/rtgate.log" 2>&1 &
    GW=$!
    PIDS+=("$GW")
    wait_port "$PORT" 60 || { echo "callgrind.sh: rtgate did not start" >&2; cleanup; continue; }
    dump "$GW" startup
    load=("$LOAD" --url "ws://127.0.0.1:$PORT/ws" "${args[@]}" --drain 5 --timeout 120
          --server-pid "$GW" --label "callgrind/$name")
    "${load[@]}" > "$dir/load.json" 2> "$dir/load.err" &
    LOADPID=$!
    PIDS+=("$LOADPID")
    wait_for "$dir/load.err" 'connections ready' 90 "$LOADPID" ||
        echo "callgrind.sh: $name: the load tool never reported its connections ready" >&2
    ready_at=$(date +%s.%N)
    dump "$GW" setup
    # Publishing starts 0.2 s after "ready" and ends warm-up + duration later; the last
    # deliveries arrive within ~0.1 s, then the tool prints its result and closes its
    # connections at once. The "run" part ends 0.5 s before the last slot, so that it
    # holds no closes (the deliveries it holds are counted, whatever the cut).
    end=$(python3 -c "import sys; print(float(sys.argv[1]) + 0.2 + $hold - 0.5)" "$ready_at")
    while kill -0 "$LOADPID" 2> /dev/null &&
        python3 -c "import sys,time; sys.exit(0 if time.time() < float(sys.argv[1]) else 1)" "$end"; do
        sleep 0.1
    done
    dump "$GW" run
    wait "$LOADPID"
    load_rc=$?
    # SIGTERM: rtgate drains (no clients are left) and exits 0; callgrind writes the last part.
    kill -TERM "$GW"
    t=$SECONDS
    while kill -0 "$GW" 2> /dev/null && [ $((SECONDS - t)) -lt 30 ]; do sleep 0.2; done
    if kill -0 "$GW" 2> /dev/null; then
        echo "callgrind.sh: $name: rtgate still running 30 s after SIGTERM; killed" >&2
        kill -KILL "$GW"
    fi
    wait "$GW"
    gw_rc=$?
    PIDS=()

    report="$OUT/$name.txt"
    {
        echo "# bench/callgrind.sh $name: $(date -u +%Y-%m-%dT%H:%MZ), $(valgrind --version), $(nproc) CPUs"
        echo "# rtgate (memory engine) under valgrind --tool=callgrind: ${gw[*]/#$ROOT\//}"
        echo "# load: ${load[*]/#$ROOT\//}"
        echo "# load exit $load_rc, rtgate exit $gw_rc after SIGTERM; fd limit of rtgate ${fdlimit:-$(ulimit -n)}"
        echo "# load result (times are distorted: rtgate ran ~50x slower under callgrind):"
        python3 - "$dir/load.json" << 'EOF'
import json, sys
try:
    d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception as e:
    print("#   no JSON result (%s)" % e); sys.exit(0)
lat = d.get("latency_us", {})
print("#   connected %s of %s (errors: connect %s, handshake %s, setup %s) in %s s; published %s, "
      "delivered %s of %s expected, lost %s, dup %s, ooo %s, errors %s; latency p50 %.1f ms, p99 %.1f ms"
      % (d.get("connected"), d.get("connections"), d.get("connect_errors"), d.get("handshake_failures"),
         d.get("setup_errors"), d.get("time_to_connect_s"), d.get("published"), d.get("delivered"),
         d.get("expected"), d.get("lost"), d.get("dup"), d.get("ooo"), d.get("errors"),
         lat.get("p50", 0) / 1000, lat.get("p99", 0) / 1000))
EOF
        echo
        echo "## Ir per part (deliveries = calls of sink_deliver, sessions = calls of gw_session_open)"
        printf '%-7s %-20s %12s %10s %7s %7s %11s %10s %10s\n' part trigger Ir deliveries opened \
            closed Ir/delivery Ir/opened Ir/closed
        parts=()
        for f in "$dir"/callgrind.out.* "$dir/callgrind.out"; do [ -f "$f" ] && parts+=("$f"); done
        for f in "${parts[@]}"; do
            python3 - "$f" "$SUMMARY" << 'EOF'
import json, subprocess, sys
f, summ = sys.argv[1], sys.argv[2]
d = json.loads(subprocess.run([sys.executable, summ, f, "--json"], capture_output=True, text=True).stdout)
trig = "?"
for line in open(f, errors="replace"):
    if line.startswith("desc: Trigger:"):
        trig = line.split(":", 2)[2].strip(); break
    if line.startswith("fn="):
        break
c = d["calls"]
dl, op, cl = c.get("sink_deliver", 0), c.get("gw_session_open", 0), c.get("gw_session_closed", 0)
part = f.rsplit("/", 1)[-1].replace("callgrind.out", "") or "final"
t = d["total_ir"]
print("%-7s %-20s %12d %10d %7d %7d %11s %10s %10s" % (part.lstrip("."), trig[:20], t, dl, op, cl,
      "%.0f" % (t / dl) if dl else "-", "%.0f" % (t / op) if op else "-", "%.0f" % (t / cl) if cl else "-"))
EOF
        done
        if [[ "$name" == setup* ]]; then
            main_part="$dir/callgrind.out.2"
            per=gw_session_open
            what="part 2 (set-up of the connections)"
        else
            main_part="$dir/callgrind.out.3"
            per=sink_deliver
            what="part 3 (publishing: warm-up + measured window)"
        fi
        echo
        echo "# Below: $what only."
        python3 "$SUMMARY" "$main_part" --per "$per" --callers _lws_log malloc json_loadb __vsnprintf_internal gw_server_sweep
        echo
        echo "## callgrind_annotate $(basename "$main_part") (self Ir, top 40)"
        echo "# lws, libuv and jansson are stripped: their static functions show as ???:0x<address>."
        echo "# The rows at 100% (main, (below main), __libc_start_main, ld.so) are an artefact: they"
        echo "# were on the stack when the part began, and callgrind_annotate 3.19 adds that call's"
        echo "# cost to their self cost."
        callgrind_annotate --auto=no --threshold=100 "$main_part" 2> /dev/null |
            sed -n '/file:function/,$p' | sed -n '3,42p'
        echo
        echo "## callgrind_annotate --inclusive=yes $(basename "$main_part") (top 40)"
        echo "# Some functions show twice, once without [object]: callgrind_annotate 3.19 keys some"
        echo "# call targets without their object. The rows are the same function."
        callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$main_part" 2> /dev/null |
            sed -n '/file:function/,$p' | sed -n '3,42p'
    } > "$report"
    sed -i "s|$ROOT/||g" "$report"
    echo "callgrind.sh: $report" >&2
done
