#!/usr/bin/env bash
# local-fleet.sh: the fleet of docker-compose.yml on loopback, without
# containers, from the same files: 3 nats-server processes (nats-N.conf, a
# cluster with JetStream), 2 rtgate nodes (rtgate.env), haproxy in front
# (haproxy.cfg). Every port is a free one chosen at `up`; a node restarted
# later gets its ports back. Everything runs in the background and is
# stopped by pid.
#
#   docker/local-fleet.sh up DIR                    start; writes DIR/fleet.env
#   docker/local-fleet.sh down DIR                  stop everything started in DIR
#   docker/local-fleet.sh start DIR gateway|nats N  start node N again (after a kill), same ports
#   docker/local-fleet.sh stop DIR gateway|nats N [SIGNAL]   signal node N (TERM) and wait for it
#
# DIR/fleet.env (shell lines, rewritten whenever a node starts):
#   WS_URL=ws://127.0.0.1:PORT/ws        through haproxy
#   GATEWAY_PIDS="pid pid" NATS_PIDS="pid pid pid" HAPROXY_PID=pid
#   GATEWAY_URLS, GATEWAY_NODE_IDS, NATS_URLS (comma-separated, as --nats takes
#   them), NATS_MONITOR_URLS, HAPROXY_STATS_URL, FLEET_LOGS
# Logs: DIR/logs/. NATS stores: DIR/nats-N/ (kept across restarts of a node).
# DIR/session-secret: the gateways' shared secret for SSE/long-poll session tokens.
#
# Environment (read by `up`; `start` reuses what `up` used): RTGATE_BIN
# (default: the README's build, build-release/, built if absent), RTGATE_ARGS
# (word-split, added to every gateway's command line); NATS_SERVER_BIN,
# HAPROXY_BIN.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
NATS_SERVER_BIN=${NATS_SERVER_BIN:-nats-server}
HAPROXY_BIN=${HAPROXY_BIN:-haproxy}
START_TIMEOUT_S=${FLEET_START_TIMEOUT_S:-90}
STOP_TIMEOUT_S=${FLEET_STOP_TIMEOUT_S:-20}


die() {
    echo "local-fleet: $*" >&2
    exit 1
}

rtgate_bin() {
    if [ -n "${FLEET_RTGATE_BIN:-}" ]; then # what `up` used: a restart runs the same
        echo "$FLEET_RTGATE_BIN"
        return
    fi
    if [ -n "${RTGATE_BIN:-}" ]; then
        [ -x "$RTGATE_BIN" ] || die "RTGATE_BIN=$RTGATE_BIN is not executable"
        echo "$RTGATE_BIN"
        return
    fi
    local b=$ROOT/build-release/gateway/rtgate
    if [ ! -x "$b" ]; then
        echo "local-fleet: building $b (the README's release build)" >&2
        cmake -S "$ROOT" -B "$ROOT/build-release" -DCMAKE_BUILD_TYPE=Release \
            -DBUILD_TESTING=OFF >/dev/null
        cmake --build "$ROOT/build-release" -j"$(nproc)" --target rtgate >/dev/null
    fi
    echo "$b"
}

# N distinct free loopback ports (all bound at once, then released).
free_ports() {
    /usr/bin/python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Fields of /proc/PID/stat after the command name: state is the first, the
# start time (clock ticks since boot) the twentieth.
proc_stat() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null; }

# True while PID runs (a zombie, killed but not yet reaped, does not count).
alive() {
    local st
    [ -n "${1:-}" ] && st=$(proc_stat "$1") && [ -n "$st" ] && [ "${st%% *}" != Z ] &&
        [ "${st%% *}" != X ]
}

# The pid of a process this script started, if that process still exists:
# DIR/pids/NAME holds its pid and start time, so a pid reused by another
# process is never signalled.
pid_of() {
    local pid start st
    read -r pid start <"$DIR/pids/$1" 2>/dev/null || return 0
    st=$(proc_stat "$pid") || return 0
    # shellcheck disable=SC2086 # split the stat fields
    set -- $st
    [ "${20:-}" = "$start" ] && echo "$pid"
    return 0
}

# Runs a command in the background with its output in DIR/logs/NAME.log and
# its pid in DIR/pids/NAME.
launch() {
    local name=$1
    shift
    echo "### $(date -u +%FT%TZ) $*" >>"$DIR/logs/$name.log"
    "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
    local pid=$! st
    st=$(proc_stat $pid) || die "$name exited at once: $(tail -n 5 "$DIR/logs/$name.log")"
    # shellcheck disable=SC2086 # split the stat fields
    set -- $st
    echo "$pid ${20}" >"$DIR/pids/$name"
}

http_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

wait_for() { # DESCRIPTION NAME COMMAND...: polls COMMAND until it succeeds
    local what=$1 name=$2
    shift 2
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until "$@"; do
        if ! alive "$(pid_of "$name")"; then
            tail -n 40 "$DIR/logs/$name.log" >&2
            die "$name exited while waiting for $what"
        fi
        if [ $SECONDS -ge $deadline ]; then
            tail -n 40 "$DIR/logs/$name.log" >&2
            die "no $what within ${START_TIMEOUT_S}s"
        fi
        sleep 0.1
    done
}

# ---- nodes ---------------------------------------------------------------

start_nats() {
    local n=$1
    local client=NATS_PORT_$n monitor=NATS_MON_PORT_$n cluster=NATS_CLUSTER_PORT_$n
    mkdir -p "$DIR/nats-$n"
    launch "nats-$n" env \
        NATS_LISTEN="127.0.0.1:${!client}" NATS_HTTP="127.0.0.1:${!monitor}" \
        NATS_CLUSTER="127.0.0.1:${!cluster}" NATS_STORE="$DIR/nats-$n" \
        NATS_ROUTE_1="nats-route://127.0.0.1:$NATS_CLUSTER_PORT_1" \
        NATS_ROUTE_2="nats-route://127.0.0.1:$NATS_CLUSTER_PORT_2" \
        NATS_ROUTE_3="nats-route://127.0.0.1:$NATS_CLUSTER_PORT_3" \
        "$NATS_SERVER_BIN" -c "$HERE/nats-$n.conf"
}

nats_healthy() {
    local monitor=NATS_MON_PORT_$1
    [ "$(http_status "http://127.0.0.1:${!monitor}/healthz")" = 200 ]
}

meta_leader() { # a JetStream meta leader, seen from any node
    local n monitor
    for n in 1 2 3; do
        monitor=NATS_MON_PORT_$n
        curl -s -m 2 "http://127.0.0.1:${!monitor}/jsz" 2>/dev/null |
            grep -q '"leader": *"[^"]' && return 0
    done
    return 1
}

start_gateway() {
    local n=$1 port=GATEWAY_PORT_$1
    local bin settings
    bin=$(rtgate_bin)
    # rtgate.env holds the recipe's settings; the NATS URLs and haproxy's
    # address (the one proxy whose X-Forwarded-For is believed) are loopback here.
    # The session secret is a file of DIR's, made at `up`.
    mapfile -t settings < <(grep -E '^RTGATE_[A-Z_]+=' "$HERE/rtgate.env" |
        grep -v -e '^RTGATE_NATS=' -e '^RTGATE_TRUSTED_PROXY=' -e '^RTGATE_SESSION_SECRET=')
    # shellcheck disable=SC2086 # RTGATE_ARGS is word-split on purpose
    launch "gateway-$n" env "${settings[@]}" RTGATE_NATS="$NATS_URLS" \
        RTGATE_TRUSTED_PROXY=127.0.0.1 RTGATE_SESSION_SECRET="$DIR/session-secret" \
        "$bin" --listen "127.0.0.1:${!port}" --node-id "rtgate-$n" $FLEET_RTGATE_ARGS
}

gateway_ready() {
    local port=GATEWAY_PORT_$1
    [ "$(http_status "http://127.0.0.1:${!port}/readyz")" = 200 ]
}

start_haproxy() {
    launch haproxy env \
        HAPROXY_BIND="127.0.0.1:$HAPROXY_PORT" HAPROXY_STATS_BIND="127.0.0.1:$HAPROXY_STATS_PORT" \
        RTGATE_1="127.0.0.1:$GATEWAY_PORT_1" RTGATE_2="127.0.0.1:$GATEWAY_PORT_2" \
        "$HAPROXY_BIN" -f "$HERE/haproxy.cfg"
}

haproxy_sees_up() { # every gateway UP in the readiness backend
    local n
    n=$(curl -s -m 2 "http://127.0.0.1:$HAPROXY_STATS_PORT/stats;csv" 2>/dev/null |
        grep -c '^rtgate_ready,rtgate-[0-9]*,.*,UP,' || true)
    [ "$n" = 2 ]
}

write_env() {
    local f=$DIR/fleet.env.tmp
    {
        echo "# written by docker/local-fleet.sh; pids of the nodes as last started"
        echo "FLEET_DIR=$DIR"
        echo "FLEET_LOGS=$DIR/logs"
        echo "WS_URL=ws://127.0.0.1:$HAPROXY_PORT/ws"
        echo "HAPROXY_PID=$(pid_of haproxy)"
        echo "HAPROXY_STATS_URL=http://127.0.0.1:$HAPROXY_STATS_PORT/stats"
        echo "GATEWAY_PIDS=\"$(pid_of gateway-1) $(pid_of gateway-2)\""
        echo "GATEWAY_URLS=\"http://127.0.0.1:$GATEWAY_PORT_1 http://127.0.0.1:$GATEWAY_PORT_2\""
        echo "GATEWAY_NODE_IDS=\"rtgate-1 rtgate-2\""
        echo "NATS_PIDS=\"$(pid_of nats-1) $(pid_of nats-2) $(pid_of nats-3)\""
        echo "NATS_URLS=$NATS_URLS"
        echo "NATS_MONITOR_URLS=\"http://127.0.0.1:$NATS_MON_PORT_1 http://127.0.0.1:$NATS_MON_PORT_2 http://127.0.0.1:$NATS_MON_PORT_3\""
    } >"$f"
    mv "$f" "$DIR/fleet.env"
}

load_ports() {
    [ -f "$DIR/ports.env" ] || die "$DIR has no fleet (run: $0 up $DIR)"
    # shellcheck disable=SC1091
    . "$DIR/ports.env"
}

# ---- commands ------------------------------------------------------------

cmd_up() {
    mkdir -p "$DIR/logs" "$DIR/pids"
    if [ -f "$DIR/ports.env" ]; then
        load_ports
        for name in nats-1 nats-2 nats-3 gateway-1 gateway-2 haproxy; do
            alive "$(pid_of $name)" && die "$name of $DIR is running: $0 down $DIR first"
        done
    fi
    local p
    read -r -a p <<<"$(free_ports 13)"
    cat >"$DIR/ports.env" <<EOF
NATS_PORT_1=${p[0]} NATS_PORT_2=${p[1]} NATS_PORT_3=${p[2]}
NATS_MON_PORT_1=${p[3]} NATS_MON_PORT_2=${p[4]} NATS_MON_PORT_3=${p[5]}
NATS_CLUSTER_PORT_1=${p[6]} NATS_CLUSTER_PORT_2=${p[7]} NATS_CLUSTER_PORT_3=${p[8]}
GATEWAY_PORT_1=${p[9]} GATEWAY_PORT_2=${p[10]}
HAPROXY_PORT=${p[11]} HAPROXY_STATS_PORT=${p[12]}
NATS_URLS=nats://127.0.0.1:${p[0]},nats://127.0.0.1:${p[1]},nats://127.0.0.1:${p[2]}
EOF
    # The binary and its extra flags, for the restarts of `start`.
    FLEET_RTGATE_BIN=
    printf 'FLEET_RTGATE_BIN=%q\nFLEET_RTGATE_ARGS=%q\n' "$(rtgate_bin)" "${RTGATE_ARGS:-}" \
        >>"$DIR/ports.env"
    load_ports
    # The gateways' shared secret for SSE and long-poll session tokens (rtgate.env).
    [ -s "$DIR/session-secret" ] ||
        (umask 077 && head -c 48 /dev/urandom | base64 >"$DIR/session-secret")
    for n in 1 2 3; do start_nats $n; done
    for n in 1 2 3; do wait_for "nats-$n /healthz" "nats-$n" nats_healthy $n; done
    wait_for "JetStream meta leader" nats-1 meta_leader
    for n in 1 2; do start_gateway $n; done
    for n in 1 2; do wait_for "gateway-$n /readyz" "gateway-$n" gateway_ready $n; done
    start_haproxy
    wait_for "haproxy seeing both gateways up" haproxy haproxy_sees_up
    write_env
    echo "local-fleet: up in $DIR: $(grep '^WS_URL' "$DIR/fleet.env")"
}

# Signals one process started by this script (by its pid) and waits for it.
stop_one() {
    local name=$1 sig=${2:-TERM} pid
    pid=$(pid_of "$name")
    alive "$pid" || return 0
    kill -s "$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if alive "$pid"; then
        echo "local-fleet: $name (pid $pid) still up after ${STOP_TIMEOUT_S}s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

cmd_down() {
    [ -d "$DIR/pids" ] || return 0
    # haproxy first: the clients' tunnels close, so the gateways' drains have
    # no one left to wait for; NATS last.
    stop_one haproxy
    stop_one gateway-1 &
    stop_one gateway-2 &
    wait
    for n in 1 2 3; do stop_one "nats-$n" & done
    wait
    echo "local-fleet: down ($DIR)"
}

node_name() {
    case "$1" in
    gateway) [[ "$2" =~ ^[12]$ ]] || die "gateway is 1 or 2" ;;
    nats) [[ "$2" =~ ^[123]$ ]] || die "nats is 1, 2 or 3" ;;
    *) die "node kind is gateway or nats" ;;
    esac
    echo "$1-$2"
}

cmd_start() {
    local name
    name=$(node_name "$1" "$2")
    load_ports
    alive "$(pid_of "$name")" && die "$name is running"
    if [ "$1" = nats ]; then
        start_nats "$2"
        wait_for "$name /healthz" "$name" nats_healthy "$2"
    else
        start_gateway "$2"
        wait_for "$name /readyz" "$name" gateway_ready "$2"
    fi
    write_env
}

cmd_stop() {
    local name
    name=$(node_name "$1" "$2")
    load_ports
    stop_one "$name" "${3:-TERM}"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
shift 2
case "$cmd" in
up) cmd_up ;;
down) cmd_down ;;
start) [ $# -eq 2 ] || usage && cmd_start "$@" ;;
stop) [ $# -ge 2 ] || usage && cmd_stop "$@" ;;
*) usage ;;
esac
