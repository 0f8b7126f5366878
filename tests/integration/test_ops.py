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


def dual_stack_free_port():
    """A port free on IPv4 and IPv6 alike: bound on [::] with IPV6_V6ONLY off, so
    the kernel avoids ports taken in either family. (A port picked on ::1 alone
    may be some other test's 127.0.0.1 listener, and then --listen [::]:port,
    which takes IPv4 too, fails.)"""
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def healthz_on(addr, port):
    """True when addr:port answers GET /healthz with 200."""
    try:
        with socket.create_connection((addr, port), timeout=2) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                more = c.recv(200)
                if not more:
                    break
                head += more
            return head.startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def start_listening(host, tmp_path, start_timeout=30.0):
    """rtgate --listen host:port on a free port; returns (process, port) once it
    answers /healthz on [::1]. The port can still be taken between the pick and
    rtgate's bind (other jobs on the machine): then rtgate says listen_failed
    and exits, and a new port is tried, as the gateway fixture does."""
    for attempt in range(3):
        port = dual_stack_free_port()
        log_path = tmp_path / ("rtgate-%s-%d.log" % (host.strip("[]").replace(":", "_") or "any",
                                                      attempt))
        with open(log_path, "wb") as log:
            p = subprocess.Popen([rtgate_bin(), "--listen", "%s:%d" % (host, port)],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
        deadline = time.monotonic() + start_timeout
        # Probe only while our process runs: once it has exited, whatever answers
        # on that port is someone else's.
        while p.poll() is None and time.monotonic() < deadline:
            if healthz_on("::1", port):
                return p, port
            time.sleep(0.05)
        text = log_path.read_text(errors="replace")
        if p.poll() is None:
            p.kill()
            p.wait(10)
            raise AssertionError("no /healthz on [::1]:%d within %.0f s with --listen %s\n%s"
                                 % (port, start_timeout, host, text))
        if "listen_failed" not in text:
            raise AssertionError("rtgate --listen %s exited with %d\n%s" % (host, p.returncode, text))
    raise AssertionError("rtgate --listen %s could not listen on 3 free ports\n%s" % (host, text))


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_listen_on_ipv6_any_and_loopback(tmp_path):
    for host in ("[::]", "[::1]"):
        p, port = start_listening(host, tmp_path)
        try:
            if host == "[::]":  # every address: IPv4 too
                assert healthz_on("127.0.0.1", port), "no /healthz on 127.0.0.1:%d" % port
        finally:
            p.terminate()
            assert p.wait(15) == 0
    r = run_rtgate(["--listen", "::1:8080"], {})
    assert r.returncode == 2, "an IPv6 address without brackets is ambiguous"
