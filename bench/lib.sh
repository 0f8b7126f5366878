# bench/lib.sh: what the bench scripts share; they source it (`. "$ROOT/bench/lib.sh"`).

# A free TCP port on 127.0.0.1 (the kernel's pick; taken again by the caller soon after).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT SECONDS: until something accepts on 127.0.0.1:PORT (0), or the time is up (1).
wait_port() {
    local end=$((SECONDS + $2))
    while [ $SECONDS -lt $end ]; do
        if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# wait_ready PORT SECONDS: until 127.0.0.1:PORT answers /readyz 200 (a gateway on NATS checks
# its stream after it listens), or the time is up (1).
wait_ready() {
    python3 - "$1" "$2" << 'PY'
import http.client, sys, time
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
        c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
PY
}

# bench_paths DIR: the binaries and places every script takes from the environment, with
# DIR (below the tree) as the default build: BUILD, RTGATE, LOAD, NATS_SERVER, OUT,
# SERVER_CPUS (0) and CLIENT_CPUS (1).
bench_paths() {
    BUILD=${BUILD:-$ROOT/$1}
    RTGATE=${RTGATE:-$BUILD/gateway/rtgate}
    LOAD=${LOAD:-$BUILD/loadtest/rtgate-load}
    NATS_SERVER=${NATS_SERVER:-nats-server}
    OUT=${OUT:-$ROOT/bench/out}
    SERVER_CPUS=${SERVER_CPUS:-0}
    CLIENT_CPUS=${CLIENT_CPUS:-1}
}

# bench_start NAME: a temp dir $TMP (/tmp/rtgate-NAME.*), the list $PIDS of processes the script
# started, stop_all (kills and reaps them, by pid), and traps that call it and remove $TMP on
# exit, and say NAME.sh was interrupted on INT/TERM.
bench_start() {
    TMP=$(mktemp -d "/tmp/rtgate-$1.XXXXXX")
    PIDS=()
    BENCH_NAME=$1
    trap 'stop_all; rm -rf "$TMP"' EXIT
    trap 'echo "$BENCH_NAME.sh: interrupted" >&2; exit 130' INT TERM
}

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null; done
    PIDS=()
}

# forget_pid PID: PID was stopped and reaped already: stop_all must not signal it (the number
# may belong to another process by then).
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# pin_server CMD...: runs CMD on $SERVER_CPUS (start it with &).
pin_server() { exec taskset -c "$SERVER_CPUS" "$@"; }

# nats_conf DIR NPORT WSPORT: DIR/nats.conf for a nats-server on loopback with its WebSocket
# listener on WSPORT and JetStream in a fresh DIR/js.
nats_conf() {
    mkdir -p "$1/js"
    cat > "$1/nats.conf" << EOT
listen: 127.0.0.1:$2
jetstream { store_dir: "$1/js", max_memory_store: 64MB, max_file_store: 256MB }
websocket { listen: "127.0.0.1:$3", no_tls: true, compression: false }
EOT
}
