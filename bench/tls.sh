#!/usr/bin/env bash
# bench/tls.sh: what a wss:// connection set-up costs rtgate against a plain ws:// one, in
# microseconds of the gateway's CPU per connection (utime + stime from /proc/PID/stat, read by
# rtgate-load --server-pid), measured in the same run (BENCHMARKS.md, "TLS").
#
# Two gateways side by side, the same build and flags: one plain, one with --tls-cert (a fresh
# self-signed ECDSA P-256 certificate; --rsa: RSA 2048). rtgate-load --scenario churn runs
# against each in turn, $ROUNDS times alternating: at --rate cycles per second a connection is
# opened (TCP, then for wss:// a full TLS handshake: the client keeps no session), upgraded,
# sends connect + sub and closes once the sub reply is in. Each round's JSON line goes to
# $OUT/tls.jsonl (labels tls/<tag>/<plain|wss>/<round>); the table on stdout gives each round's
# cpu_us_per_connection and the median of wss minus plain.
#
# Usage: bench/tls.sh [--rounds N] [--rate R] [--duration S] [--rsa]
# Environment: BUILD (default build-rel), RTGATE, LOAD, OUT, SERVER_CPUS (0), CLIENT_CPUS (1).
# Bounded: each rtgate-load run has --timeout; the script kills what it started, by pid.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh" # free_port, wait_port, bench_paths
bench_paths build-rel  # BUILD, RTGATE, LOAD, NATS_SERVER, OUT, SERVER_CPUS, CLIENT_CPUS
ROUNDS=3
RATE=100
DURATION=10
KEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
KEY_NAME=ecdsa-p256

while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --rsa) KEY=(-newkey rsa:2048); KEY_NAME=rsa-2048 ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "tls.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
for b in "$RTGATE" "$LOAD"; do
    [ -x "$b" ] || { echo "tls.sh: $b is missing (cmake --build build-rel --target rtgate rtgate-load)" >&2; exit 2; }
done

mkdir -p "$OUT"
bench_start tls # TMP, PIDS, stop_all (lib.sh)

openssl req -x509 "${KEY[@]}" -nodes -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -days 2 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2> /dev/null \
    || { echo "tls.sh: openssl could not make a certificate" >&2; exit 1; }

# start NAME FLAGS...: a gateway pinned to SERVER_CPUS; sets PORT_<NAME> and PID_<NAME>.
start() {
    local name=$1 port
    shift
    port=$(free_port)
    taskset -c "$SERVER_CPUS" "$RTGATE" --listen "127.0.0.1:$port" --ip-conn-rate 0 \
        --log-level warn --drain-ms 0 "$@" > "$TMP/rtgate-$name.log" 2>&1 &
    PIDS+=($!)
    printf -v "PID_$name" %s "$!"
    printf -v "PORT_$name" %s "$port"
    wait_port "$port" 10 || { echo "tls.sh: rtgate ($name) did not start" >&2; cat "$TMP/rtgate-$name.log" >&2; exit 1; }
}
start plain
start wss --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem"

JSON="$OUT/tls.jsonl"
TAG="tls-$(date -u +%Y%m%dT%H%M%SZ)"
echo "tls.sh: $TAG, git $(git -C "$ROOT" rev-parse --short HEAD), $KEY_NAME, churn --rate $RATE --duration $DURATION, $ROUNDS rounds" >&2

# churn KIND ROUND: one churn run; prints cpu_us_per_connection.
churn() {
    local kind=$1 url pid
    if [ "$kind" = wss ]; then
        url="wss://127.0.0.1:$PORT_wss/ws"; pid=$PID_wss
    else
        url="ws://127.0.0.1:$PORT_plain/ws"; pid=$PID_plain
    fi
    taskset -c "$CLIENT_CPUS" "$LOAD" --url "$url" --tls-ca "$TMP/cert.pem" --scenario churn \
        --rate "$RATE" --duration "$DURATION" --warmup 2 --server-pid "$pid" \
        --label "$TAG/$kind/$2" --json "$JSON" --timeout $((DURATION + 60)) -q 2>> "$TMP/load.err" |
        python3 -c 'import json, sys
d = json.loads(sys.stdin.read())
ok = d["ok"] and d["measured_failed"] == 0
print("%.1f %s %.1f %d" % (d["server"]["cpu_us_per_connection"], "ok" if ok else "NOT-OK",
                           d["setup_latency_us"]["p50"], d["measured_completed"]))'
}

printf '%-6s %-6s %22s %8s %14s %12s\n' round kind cpu_us_per_connection ok setup_p50_us connections
diffs=()
for r in $(seq 1 "$ROUNDS"); do
    read -r plain_us plain_ok plain_p50 plain_n <<< "$(churn plain "$r")"
    printf '%-6s %-6s %22s %8s %14s %12s\n' "$r" plain "$plain_us" "$plain_ok" "$plain_p50" "$plain_n"
    read -r wss_us wss_ok wss_p50 wss_n <<< "$(churn wss "$r")"
    printf '%-6s %-6s %22s %8s %14s %12s\n' "$r" wss "$wss_us" "$wss_ok" "$wss_p50" "$wss_n"
    diffs+=("$(python3 -c "print('%.1f %.2f' % ($wss_us - $plain_us, $wss_us / $plain_us))")")
done
printf '%s\n' "${diffs[@]}" | sort -n | awk -v n="$ROUNDS" '
    { d[NR] = $1; r[NR] = $2 }
    END { m = int((n + 1) / 2); printf "median over %d rounds: wss costs %s us more per connection (x%s of plain)\n", n, d[m], r[m] }'
[ -s "$TMP/load.err" ] && sort "$TMP/load.err" | uniq -c | sort -rn | head -5 >&2
exit 0
