"""Running rtgate as a server (issue 14): the node-wide handshake rate
(--conn-rate), options from RTGATE_* environment variables with their
precedence, and listening on IPv6."""
import os
import socket
import subprocess
import time

import pytest

from conftest import rtgate_bin
from rtclient import SUBPROTOCOLS, Client, raw_handshake, run


def test_node_conn_rate_refuses_with_503_and_a_retry_after(gateway):
    """Past --conn-burst handshakes at once the node answers 503 with a
    Retry-After of at least a second, whatever the client address; tokens
    come back at --conn-rate."""
    g = gateway("--conn-rate", "4", "--conn-burst", "3", "--ip-conn-rate", "0")
    socks = []
    try:
        got = []
        for _ in range(6):
            status, headers, s = raw_handshake(g.port, protocols=[SUBPROTOCOLS["json"]])
            socks.append(s)
            got.append((status, headers))
        assert [st for st, _ in got] == [101, 101, 101, 503, 503, 503], got
        for st, h in got[3:]:
            assert 1 <= int(h["retry-after"]) <= 30, h
        m = g.metrics()
        assert m['rtgate_handshakes_refused_total{cause="node_rate"}'] == 3
        time.sleep(0.6)  # 4 tokens a second: two are back
        status, _, s = raw_handshake(g.port, protocols=[SUBPROTOCOLS["json"]])
        socks.append(s)
        assert status == 101
    finally:
        for s in socks:
            if s is not None:
                s.close()


def test_conn_rate_retry_after_spreads_a_storm(gateway):
    """A storm is told to come back at different times, over about the time the
    bucket needs to admit it, not all in the same second."""
    g = gateway("--conn-rate", "5", "--conn-burst", "1", "--ip-conn-rate", "0")
    socks, afters = [], []
    try:
        for _ in range(40):
            status, headers, s = raw_handshake(g.port, protocols=[SUBPROTOCOLS["json"]])
            socks.append(s)
            if status == 503:
                afters.append(int(headers["retry-after"]))
    finally:
        for s in socks:
            if s is not None:
                s.close()
    assert len(afters) >= 35, afters
    # 40 waiting at 5 a second: about 8 s of backlog, told 1..9 s.
    assert len(set(afters)) >= 4 and max(afters) >= 5 and min(afters) >= 1, afters


def run_rtgate(args, env_extra, timeout=10):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    env.update(env_extra)
    return subprocess.run([rtgate_bin()] + args, env=env, capture_output=True, timeout=timeout)


def test_options_from_the_environment_and_their_precedence(gateway, tmp_path):
    """defaults < config file < RTGATE_* < flags; RTGATE_EPHEMERAL is a list
    that replaces the file's patterns; a bad value is refused with the
    variable's name."""
    conf = tmp_path / "rtgate.conf"
    conf.write_text("max-subs = 3\nping-interval-ms = 7000\nephemeral = file.>\n"
                    "idle-timeout-ms = 9000\n")
    g = gateway("--config", str(conf), "--ping-interval-ms", "8000",
                env={"RTGATE_MAX_SUBS": "5", "RTGATE_PING_INTERVAL_MS": "6000",
                     "RTGATE_EPHEMERAL": "typing.>, env.*", "RTGATE_BIN_UNRELATED": "x"})

    async def go():
        async with Client(g.url(), "json") as c:
            r = await c.connect()
            assert r["limits"]["max_subs"] == 5, r          # env over the file
            assert r["heartbeat_ms"] == 8000, r             # flag over env
            eph = await c.sub("typing.room")
            assert eph["durable"] is False, eph              # env's pattern
            dur = await c.sub("file.x")
            assert dur["durable"] is True, dur               # the file's list was replaced
    run(go())
    # A policy list from the environment (RTGATE_SUB_ALLOW, comma-separated).
    g2 = gateway(env={"RTGATE_SUB_ALLOW": "chat.>, typing.*"})

    async def go2():
        async with Client(g2.url(), "json") as c:
            await c.connect()
            assert (await c.sub("chat.room"))["ok"] is True
            assert (await c.sub("typing.x"))["ok"] is True
            r = await c.sub("news.x")
            assert r["ok"] is False and r["error"]["code"] == 403, r
    run(go2())
    r = run_rtgate(["--listen", "127.0.0.1:0"], {"RTGATE_MAX_SUBS": "many"})
    assert r.returncode == 2 and b"RTGATE_MAX_SUBS" in r.stderr, r
    # RTGATE_CONFIG names the file when there is no --config.
    conf.write_text("max-subs = x\n")
    r = run_rtgate(["--listen", "127.0.0.1:0"], {"RTGATE_CONFIG": str(conf)})
    assert r.returncode == 2 and b"bad line" in r.stderr, r


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_listen_on_ipv6_any_and_loopback(tmp_path):
    for host in ("[::]", "[::1]"):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.close()
        log = open(tmp_path / "rtgate.log", "wb")
        p = subprocess.Popen([rtgate_bin(), "--listen", "%s:%d" % (host, port)],
                             stdout=log, stderr=subprocess.STDOUT,
                             env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
        try:
            deadline = time.monotonic() + 10
            healthy = False
            while time.monotonic() < deadline and not healthy:
                try:
                    c = socket.create_connection(("::1", port), timeout=2)
                    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    healthy = b" 200 " in c.recv(200)
                    c.close()
                except OSError:
                    time.sleep(0.05)
            assert healthy, "no /healthz on [::1]:%d with --listen %s" % (port, host)
            if host == "[::]":  # every address: IPv4 too
                c = socket.create_connection(("127.0.0.1", port), timeout=2)
                c.close()
        finally:
            p.terminate()
            assert p.wait(10) == 0
            log.close()
    r = run_rtgate(["--listen", "::1:8080"], {})
    assert r.returncode == 2, "an IPv6 address without brackets is ambiguous"
