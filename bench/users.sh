#!/usr/bin/env bash
# bench/users.sh: what per-user limits and channel presence cost (BENCHMARKS.md, "Users across
# the fleet"), each against its baseline in the same invocation, in interleaved rounds.
#
# 1. Publishes. One nats-server and three rtgates on it (--nats; HS256 tokens, one user per
#    publisher from a --token-file of P lines). rtgate-load --scenario channels on gateway A:
#    P subscribers on P channels (one each, so a delivery is a publish), P publishers, RATE
#    publishes/s, ephemeral channels; --server-pid A,B,C counts the CPU of the whole fleet,
#    since every node takes the reports. Variants, in turn each round: `buckets` (only the
#    per-connection buckets) and `fleet` (--user-pub-rate and -burst far above the load: never
#    refusing, but every publish taken, reported and charged on the other nodes). The difference
#    of their server CPU per delivery is the limiter's cost per publish.
# 2. Join storm. One rtgate, memory engine: rtgate-load --scenario fanout, N subscribers on one
#    channel set up as fast as they can, once without "presence" (`plain`) and once with it
#    (`presence`: every connection joins, members listed up to --presence-max-members, then
#    counted), and `listed`: N2 subscribers with every member listed (--presence-max-members
#    N2: a join goes to every member, N2^2/2 events). Set-up time and server CPU.
#
# Usage: bench/users.sh [--rounds R] [--pubs P] [--rate RATE] [--duration S] [--storm N]
#                       [--listed N2] [--only publish|storm]
# Environment: BUILD (default build-rel), RTGATE, LOAD, NATS_SERVER, OUT, SERVER_CPUS,
# CLIENT_CPUS (lib.sh).
# Output: $OUT/users.jsonl (one line per run) and medians on stdout.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port, bench_paths
bench_paths build-rel
ROUNDS=3
PUBS=100
RATE=3000
DURATION=8
STORM=10000
LISTED=2000
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --pubs) PUBS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --storm) STORM=$2; shift 2 ;;
    --listed) LISTED=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "users.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for b in "$RTGATE" "$LOAD"; do
    [ -x "$b" ] || { echo "users.sh: $b is missing (cmake --build build-rel)" >&2; exit 2; }
done
command -v "$NATS_SERVER" > /dev/null || { echo "users.sh: nats-server not found" >&2; exit 2; }

TMP=$(mktemp -d /tmp/rtgate-users-bench.XXXXXX)
PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null; done
    PIDS=()
}
trap 'stop_all; rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
RESULTS="$OUT/users.jsonl"
: > "$RESULTS"

# The key and PUBS tokens (users u0..), valid for an hour.
/usr/bin/python3 - "$TMP" "$PUBS" << 'EOF' || exit 1
import base64, os, sys, time
import jwt
d, n = sys.argv[1], int(sys.argv[2])
secret = base64.b64encode(os.urandom(36))
open(os.path.join(d, "key"), "wb").write(secret + b"\n")
now = int(time.time())
with open(os.path.join(d, "tokens"), "w") as f:
    for i in range(n):
        f.write(jwt.encode({"sub": "u%d" % i, "iat": now, "exp": now + 3600}, secret,
                           algorithm="HS256") + "\n")
EOF

NPORT=$(free_port)
mkdir -p "$TMP/js"
cat > "$TMP/nats.conf" << EOT
listen: 127.0.0.1:$NPORT
jetstream { store_dir: "$TMP/js", max_memory_store: 64MB, max_file_store: 256MB }
EOT
"$NATS_SERVER" -c "$TMP/nats.conf" > "$TMP/nats.log" 2>&1 &
NATS_PID=$!
wait_port "$NPORT" 10 || { echo "users.sh: nats-server did not start" >&2; exit 1; }

# start_gw NAME FLAGS...: an rtgate on a free port, pinned to SERVER_CPUS; sets PORT and PID.
start_gw() {
    local name=$1
    shift
    PORT=$(free_port)
    taskset -c "$SERVER_CPUS" "$RTGATE" --listen "127.0.0.1:$PORT" --log-level warn \
        --ip-conn-rate 0 --drain-ms 0 --drain-timeout-ms 2000 "$@" > "$TMP/rtgate-$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_port "$PORT" 10 || { echo "users.sh: rtgate $name did not start" >&2; tail -3 "$TMP/rtgate-$name.log" >&2; exit 1; }
}

# cpu_ticks PID: user + system CPU of the process so far, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# field JSON EXPR: a value of the load tool's JSON line (python expression over r).
field() {
    printf '%s' "$1" | /usr/bin/python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print($2)"
}

pub_run() {
    local variant=$1 round=$2 flags=() pids=() url=""
    [ "$variant" = fleet ] && flags=(--user-pub-rate 1000000 --user-pub-burst 1000000)
    for n in a b c; do
        start_gw "$variant-$n" --nats "nats://127.0.0.1:$NPORT" --ephemeral 'bench.>' \
            --jwt-key "$TMP/key" --jwt-alg HS256 --sub-allow '>' --pub-allow '>' \
            --pub-rate 100000 --pub-burst 100000 --msg-rate 100000 --msg-burst 100000 "${flags[@]}"
        pids+=("$PID")
        [ -z "$url" ] && url="ws://127.0.0.1:$PORT/ws"
    done
    sleep 1
    local t0=() t1=()
    for p in "${pids[@]}"; do t0+=("$(cpu_ticks "$p")"); done
    local out
    out=$(taskset -c "$CLIENT_CPUS" "$LOAD" --url "$url" --scenario channels --subs "$PUBS" \
        --channels "$PUBS" --publishers "$PUBS" --rate "$RATE" --duration "$DURATION" \
        --warmup 2 --channel-prefix bench --token-file "$TMP/tokens" \
        --server-pid "$(IFS=,; echo "${pids[*]}")" --broker-pid "$NATS_PID" --timeout 120 \
        2> "$TMP/load.err")
    for p in "${pids[@]}"; do t1+=("$(cpu_ticks "$p")"); done
    stop_all
    local us ok limited
    us=$(field "$out" 'r["server"]["cpu_us_per_delivery"]') || { echo "users.sh: no result: $(tail -3 "$TMP/load.err")" >&2; exit 1; }
    ok=$(field "$out" 'r["pub_ok"]')
    limited=$(field "$out" 'r["rate_limited"]')
    # The whole run (set-up to drain) per node: A serves the load, B and C only hear reports.
    local hz per_node
    hz=$(getconf CLK_TCK)
    per_node=$(awk -v a0="${t0[0]}" -v a1="${t1[0]}" -v b0="${t0[1]}" -v b1="${t1[1]}" \
        -v c0="${t0[2]}" -v c1="${t1[2]}" -v hz="$hz" -v n="$ok" \
        'BEGIN { printf "%.2f %.2f", (a1 - a0) * 1e6 / hz / n, ((b1 - b0) + (c1 - c0)) * 1e6 / hz / n }')
    echo "{\"kind\":\"publish\",\"variant\":\"$variant\",\"round\":$round,\"publishers\":$PUBS,\"users\":$PUBS,\"rate\":$RATE,\"pub_ok\":$ok,\"rate_limited\":$limited,\"cpu_us_per_delivery\":$us,\"nodes\":3,\"node_a_us_per_publish\":${per_node% *},\"nodes_bc_us_per_publish\":${per_node#* }}" >> "$RESULTS"
    echo "  round $round $variant: ${us} us of fleet CPU per publish (whole run: A ${per_node% *} us, B+C ${per_node#* } us; pub_ok $ok, 429s $limited)"
}

storm_run() {
    local variant=$1 round=$2 n=$3 flags=() pflag=()
    case "$variant" in
    plain) ;;
    presence) pflag=(--presence) ;;
    listed) pflag=(--presence); flags=(--presence-max-members "$n") ;;
    esac
    start_gw "storm-$variant" --msg-rate 100000 --msg-burst 100000 --max-outbox-bytes 67108864 \
        "${flags[@]}"
    local out
    out=$(taskset -c "$CLIENT_CPUS" "$LOAD" --url "ws://127.0.0.1:$PORT/ws" --scenario fanout \
        --subs "$n" --publishers 1 --rate 10 --duration 2 --warmup 1 --channel-prefix storm \
        --connect-rate 100000 "${pflag[@]}" --server-pid "$PID" --timeout 300 2> "$TMP/load.err")
    stop_all
    local t cpu conn
    t=$(field "$out" 'r["time_to_connect_s"]') || { echo "users.sh: no result: $(tail -3 "$TMP/load.err")" >&2; exit 1; }
    cpu=$(field "$out" 'r["server"]["cpu_s_setup"]')
    conn=$(field "$out" 'r["connected"]')
    echo "{\"kind\":\"storm\",\"variant\":\"$variant\",\"round\":$round,\"subs\":$n,\"connected\":$conn,\"time_to_connect_s\":$t,\"server_cpu_s_setup\":$cpu}" >> "$RESULTS"
    echo "  round $round $variant ($n members): all in after ${t} s, ${cpu} s of server CPU (connected $conn)"
}

echo "== users.sh, git $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$ONLY" != storm ]; then
    echo "== publishes: $PUBS users publishing $RATE/s over 3 nodes, $ROUNDS rounds"
    for round in $(seq 1 "$ROUNDS"); do
        for v in buckets fleet; do pub_run "$v" "$round"; done
    done
fi
if [ "$ONLY" != publish ]; then
    echo "== join storm: $STORM members of one channel (and $LISTED all listed), $ROUNDS rounds"
    for round in $(seq 1 "$ROUNDS"); do
        storm_run plain "$round" "$STORM"
        storm_run presence "$round" "$STORM"
        storm_run plain "$round" "$LISTED"
        storm_run listed "$round" "$LISTED"
    done
fi

/usr/bin/python3 - "$RESULTS" << 'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float("nan")
def pubmed(v, key):
    return med([r[key] for r in rows if r["kind"] == "publish" and r["variant"] == v and key in r])
pub = {v: pubmed(v, "cpu_us_per_delivery") for v in ("buckets", "fleet")}
if any(r["kind"] == "publish" for r in rows):
    print("publish: per-connection buckets %.2f us, + fleet-wide user limiter %.2f us: %+.2f us per publish (median)"
          % (pub["buckets"], pub["fleet"], pub["fleet"] - pub["buckets"]))
    bc = {v: pubmed(v, "nodes_bc_us_per_publish") for v in ("buckets", "fleet")}
    print("  nodes B+C (reports only): %.2f us -> %.2f us per publish (median)" % (bc["buckets"], bc["fleet"]))
for v in ("plain", "presence", "listed"):
    for n in sorted({r["subs"] for r in rows if r["kind"] == "storm" and r["variant"] == v}):
        rs = [r for r in rows if r["kind"] == "storm" and r["variant"] == v and r["subs"] == n]
        print("storm %-8s %6d: %.2f s to all in, %.2f s server CPU (median of %d)"
              % (v, n, med([r["time_to_connect_s"] for r in rs]),
                 med([r["server_cpu_s_setup"] for r in rs]), len(rs)))
EOF
