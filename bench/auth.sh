#!/usr/bin/env bash
# bench/auth.sh: the CPU cost of a verified connect (HS256, RS256, ES256) against an anonymous
# one, in one invocation (BENCHMARKS.md, "Verified connects").
#
# 1. bench_auth: auth_verify alone, N times per algorithm, with the key and a token of the
#    kind the gateway gets (sub, exp, iat, sub_allow, pub_allow), made here with python3-jwt.
# 2. Whole connects: for ROUNDS rounds, one fresh rtgate (memory engine, pinned to
#    $SERVER_CPUS) per variant (anon, then --jwt-key for each algorithm, in turn so that noise
#    spreads over all), and rtgate-load --scenario idle --subs $CONNS --server-pid on it
#    ($CLIENT_CPUS), with --token-file for the verified ones; the server's CPU per connection
#    set-up (WebSocket upgrade + connect + connected) is taken from its report. Median per
#    variant, and the difference to anon = the cost of verifying.
#
# Usage: bench/auth.sh [--conns N] [--rounds R] [--verifies N]
# Environment: BUILD (default build-rel), RTGATE, LOAD, OUT, SERVER_CPUS, CLIENT_CPUS (lib.sh).
# Needs: cmake --build build-rel --target rtgate rtgate-load bench_auth.
# Output: $OUT/auth.jsonl (one line per measurement) and a table on stdout.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port, bench_paths
bench_paths build-rel
BENCH_AUTH=${BENCH_AUTH:-$BUILD/auth/bench_auth}
CONNS=2000
ROUNDS=5
VERIFIES=2000
while [ $# -gt 0 ]; do
    case "$1" in
    --conns) CONNS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --verifies) VERIFIES=$2; shift 2 ;;
    *) echo "auth.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for b in "$RTGATE" "$LOAD" "$BENCH_AUTH"; do
    [ -x "$b" ] || { echo "auth.sh: $b is missing (cmake --build build-rel --target rtgate rtgate-load bench_auth)" >&2; exit 2; }
done

TMP=$(mktemp -d /tmp/rtgate-auth-bench.XXXXXX)
GW_PID=""
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2> /dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$OUT"
RESULTS="$OUT/auth.jsonl"
: > "$RESULTS"

# Keys and one token per algorithm (valid for an hour).
/usr/bin/python3 - "$TMP" << 'EOF' || exit 1
import base64, os, sys, time
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
d = sys.argv[1]
secret = base64.b64encode(os.urandom(36))
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
pub = lambda k: k.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
claims = {"sub": "bench-user-0042", "iat": int(time.time()), "exp": int(time.time()) + 3600,
          "sub_allow": ["bench.>", "chat.*"], "pub_allow": ["chat.*"]}
for alg, key, keyfile in (("HS256", secret, secret + b"\n"), ("RS256", rsa_key, pub(rsa_key)),
                          ("ES256", ec_key, pub(ec_key))):
    open(os.path.join(d, alg + ".key"), "wb").write(keyfile)
    open(os.path.join(d, alg + ".token"), "w").write(jwt.encode(claims, key, algorithm=alg))
EOF

echo "== auth_verify alone ($VERIFIES each)"
for alg in HS256 RS256 ES256; do
    line=$(taskset -c "$SERVER_CPUS" "$BENCH_AUTH" "$TMP/$alg.key" "$alg" "$TMP/$alg.token" "$VERIFIES") || exit 1
    echo "$line"
    echo "{\"kind\":\"verify\",${line#\{}" >> "$RESULTS"
done

if ! "$LOAD" --help 2>&1 | grep -q -- '--token-file'; then
    echo "auth.sh: $LOAD has no --token-file: whole-connect measurement skipped" >&2
    exit 0
fi

# run_variant NAME ROUND: a fresh rtgate for the variant, CONNS idle connections, one JSON line.
run_variant() {
    local name=$1 round=$2 port flags=() tok=()
    port=$(free_port)
    if [ "$name" != anon ]; then
        flags=(--jwt-key "$TMP/$name.key" --jwt-alg "$name")
        tok=(--token-file "$TMP/$name.token")
    fi
    taskset -c "$SERVER_CPUS" "$RTGATE" --listen "127.0.0.1:$port" --log-level warn \
        --ip-conn-rate 0 "${flags[@]}" > "$TMP/rtgate-$name.log" 2>&1 &
    GW_PID=$!
    wait_port "$port" 10 || { echo "auth.sh: rtgate did not start" >&2; tail -3 "$TMP/rtgate-$name.log" >&2; exit 1; }
    local out
    out=$(taskset -c "$CLIENT_CPUS" "$LOAD" --url "ws://127.0.0.1:$port/ws" --scenario idle \
        --subs "$CONNS" --duration 1 --server-pid "$GW_PID" --timeout 120 "${tok[@]}" 2> "$TMP/load.err")
    kill "$GW_PID" 2> /dev/null
    wait "$GW_PID" 2> /dev/null
    GW_PID=""
    local us
    us=$(printf '%s' "$out" | /usr/bin/python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
ok = r.get("connected", r.get("conns", {}).get("connected"))
print(r["server"]["cpu_us_per_connection"], ok)' 2> /dev/null) || {
        echo "auth.sh: no result for $name: $(tail -3 "$TMP/load.err")" >&2; exit 1; }
    [ "${us#* }" = "$CONNS" ] || { echo "auth.sh: $name: only ${us#* } of $CONNS connected" >&2; exit 1; }
    echo "{\"kind\":\"connect\",\"variant\":\"$name\",\"round\":$round,\"conns\":$CONNS,\"cpu_us_per_connection\":${us% *},\"connected\":\"${us#* }\"}" >> "$RESULTS"
    echo "  round $round $name: ${us% *} us of server CPU per connection (connected: ${us#* })"
}

echo "== whole connects ($CONNS idle connections per run, $ROUNDS rounds)"
for round in $(seq 1 "$ROUNDS"); do
    for v in anon HS256 RS256 ES256; do
        run_variant "$v" "$round"
    done
done

/usr/bin/python3 - "$RESULTS" << 'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
verify = {r["alg"]: r["cpu_us_per_verify"] for r in rows if r["kind"] == "verify"}
conn = {}
for r in rows:
    if r["kind"] == "connect":
        conn.setdefault(r["variant"], []).append(r["cpu_us_per_connection"])
base = statistics.median(conn["anon"])
print("\n| connect | server CPU per connection (median) | vs anonymous | auth_verify alone |")
print("|---|---|---|---|")
for v in ("anon", "HS256", "RS256", "ES256"):
    m = statistics.median(conn[v])
    extra = "" if v == "anon" else " (+%.1f us)" % (m - base)
    alone = "" if v == "anon" else "%.1f us" % verify[v]
    print("| %s | %.1f us | x%.2f%s | %s |" % (v, m, m / base, extra, alone))
EOF
