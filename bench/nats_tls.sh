#!/usr/bin/env bash
# bench/nats_tls.sh: what TLS to NATS costs the gateway. Runs the same load against an
# rtgate on a plain nats-server and on a TLS-only one (certificates made here with the
# openssl command line; --nats-ca on the gateway, so both of its NATS connections are
# TLS), ROUNDS times each, alternating, and prints one line per run: gateway CPU from
# the load's start to its end, deliveries, CPU per delivery, latency p50/p99.
#
# Usage: bench/nats_tls.sh [SCENARIO [RATE [SUBS [ROUNDS]]]]   (default channels 2000 1000 3)
#   channels: each message is one delivery, so the NATS hop (and its TLS) is all there is;
#   fanout:   one channel, SUBS subscribers: a NATS message is decrypted once for SUBS
#             deliveries.
# Environment: BUILD (default build-bench), RTGATE, LOAD, NATS_SERVER, SERVER_CPUS, CLIENT_CPUS
# (lib.sh). Every process it starts is stopped by pid.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
bench_paths build-bench
SCEN=${1:-channels}
RATE=${2:-2000}
SUBS=${3:-1000}
ROUNDS=${4:-3}
TMP=$(mktemp -d /tmp/rtgate-tls-bench.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done; rm -rf "$TMP"' EXIT

for b in "$RTGATE" "$LOAD"; do
    [ -x "$b" ] || { echo "nats_tls.sh: $b is missing (see bench/run.sh to build)" >&2; exit 2; }
done
ossl() { openssl "$@" > /dev/null 2>&1 || { echo "nats_tls.sh: openssl $1 failed" >&2; exit 2; }; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/ca.key" \
    -out "$TMP/ca.pem" -days 1 -subj "/CN=bench CA"
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/srv.key" \
    -out "$TMP/srv.csr" -subj "/CN=bench nats"
echo "subjectAltName=IP:127.0.0.1" > "$TMP/san.ext"
ossl x509 -req -in "$TMP/srv.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -CAcreateserial \
    -out "$TMP/srv.pem" -days 1 -extfile "$TMP/san.ext"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

run_once() { # MODE: plain or tls
    local mode=$1 dir np gp url sec t0 t1
    dir=$(mktemp -d "$TMP/run.XXXX")
    np=$(free_port)
    gp=$(free_port)
    {
        echo "listen: 127.0.0.1:$np"
        echo "jetstream { store_dir: \"$dir/js\" }"
        [ "$mode" = tls ] && echo "tls { cert_file: \"$TMP/srv.pem\", key_file: \"$TMP/srv.key\" }"
    } > "$dir/nats.conf"
    taskset -c "$SERVER_CPUS" "$NATS_SERVER" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 &
    local nsp=$!
    PIDS+=("$nsp")
    wait_port "$np" 10 || { echo "nats-server did not start" >&2; return 1; }
    url=nats://127.0.0.1:$np
    sec=()
    [ "$mode" = tls ] && url=tls://127.0.0.1:$np && sec=(--nats-ca "$TMP/ca.pem")
    taskset -c "$SERVER_CPUS" "$RTGATE" --listen "127.0.0.1:$gp" --nats "$url" "${sec[@]}" \
        --ephemeral 'load.>' --pub-rate 100000 --pub-burst 100000 --msg-rate 100000 \
        --msg-burst 100000 > "$dir/gw.log" 2>&1 &
    local gwp=$!
    PIDS+=("$gwp")
    wait_port "$gp" 10 || { echo "rtgate did not start" >&2; return 1; }
    taskset -c "$CLIENT_CPUS" "$LOAD" --url "ws://127.0.0.1:$gp/ws" --scenario "$SCEN" \
        --subs "$SUBS" --rate "$RATE" --duration 10 --warmup 2 > "$dir/load.json" 2> "$dir/load.err" &
    local lp=$!
    until grep -q running "$dir/load.err" 2> /dev/null || ! kill -0 "$lp" 2> /dev/null; do
        sleep 0.05
    done
    t0=$(cpu_ticks "$gwp")
    wait "$lp"
    t1=$(cpu_ticks "$gwp")
    kill "$gwp" "$nsp"
    wait "$gwp" "$nsp" 2> /dev/null
    python3 - "$mode" "$t0" "$t1" "$(getconf CLK_TCK)" "$dir/load.json" << 'PY'
import json, sys
mode, t0, t1, hz, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
j = json.loads(open(path).read().strip().splitlines()[-1])
cpu = (t1 - t0) / hz
lat = j["latency_us"]
print("%-5s gw_cpu_s=%.2f delivered=%d cpu_us_per_delivery=%.2f p50_ms=%.2f p99_ms=%.2f "
      "lost=%d errors=%d" % (mode, cpu, j["delivered"], cpu * 1e6 / max(j["delivered"], 1),
                             lat["p50"] / 1000, lat["p99"] / 1000, j["lost"], j["errors"]))
PY
}

echo "# $SCEN rate=$RATE subs=$SUBS rounds=$ROUNDS ($RTGATE)"
for _ in $(seq "$ROUNDS"); do
    run_once plain
    run_once tls
done
