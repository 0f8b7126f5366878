"""Real client addresses behind a load balancer (--trusted-proxy,
--proxy-protocol v2): only a trusted peer's X-Forwarded-For or PROXY header
names the client; per-address limits and log lines use that address; spoofed
headers from anyone else are ignored (X-Forwarded-For) or refused (PROXY).

Loopback has every 127.0.0.0/8 address, so the tests play the load balancer
from 127.0.0.2 and strangers from 127.0.0.3 and up."""
import subprocess
import time

import pytest

from conftest import rtgate_bin
from edgekit import (SMALL_ASAN, STREAM_FLAGS, attack_checked, closed_by_peer, connect_from,
                     handshake, proxy_v2_header, upgrade_request, read_response, wait_for)

LB, STRANGER = "127.0.0.2", "127.0.0.3"
TIGHT = ("--ip-conn-rate", "1", "--ip-conn-burst", "3")


def statuses(port, n, **kw):
    out = []
    for _ in range(n):
        status, _, _, s = handshake(port, **kw)
        s.close()
        out.append(status)
    return out


def status_of(port, **kw):
    return statuses(port, 1, **kw)[0]


def refused_lines(g, peer):
    return [line for line in g.log().splitlines()
            if "event=handshake_refused" in line and "peer=%s " % peer in line]


# ---- X-Forwarded-For ------------------------------------------------------

def test_xff_from_a_trusted_proxy_names_the_client(gateway):
    g = gateway("--trusted-proxy", LB, "--log-level", "debug", *TIGHT)
    xff = {"X-Forwarded-For": "203.0.113.7"}
    got = statuses(g.port, 6, headers=xff, src=LB)
    assert got[:3] == [101] * 3 and got.count(429) >= 2, got
    # Another client behind the same proxy has its own budget...
    assert statuses(g.port, 3, headers={"X-Forwarded-For": "203.0.113.8"}, src=LB) == [101] * 3
    # ...and a client's forged entry is not what counts: the proxy's is.
    chain = {"X-Forwarded-For": "203.0.113.8, 203.0.113.9"}
    assert statuses(g.port, 3, headers=chain, src=LB) == [101] * 3
    assert refused_lines(g, "203.0.113.7"), g.log()
    assert not refused_lines(g, LB)
    assert wait_for(lambda: "peer=203.0.113.9" in g.log(), 5), "session lines name the client"


def test_xff_from_an_untrusted_peer_is_ignored(gateway):
    g = gateway("--trusted-proxy", "10.0.0.0/8", *TIGHT)
    got = [status_of(g.port, headers={"X-Forwarded-For": "198.51.100.%d" % i}, src=STRANGER)
           for i in range(6)]
    assert got[:3] == [101] * 3 and got.count(429) >= 2, got
    assert refused_lines(g, STRANGER), g.log()
    assert "198.51.100." not in g.log()


def test_a_connect_flood_through_the_proxy_is_limited_per_forwarded_client(gateway):
    g = gateway("--trusted-proxy", LB, *TIGHT, *STREAM_FLAGS, env=SMALL_ASAN)
    flooder = {"X-Forwarded-For": "203.0.113.66"}

    def attack():
        got = statuses(g.port, 400, headers=flooder, src=LB)
        assert got.count(429) >= 390, got.count(429)
        # Meanwhile every other client behind the proxy gets in.
        for i in range(20):
            other = {"X-Forwarded-For": "203.0.113.%d" % (100 + i)}
            assert statuses(g.port, 1, headers=other, src=LB) == [101]

    attack_checked(g, attack, "400 handshakes from one forwarded address")
    m = g.metrics()
    assert m['rtgate_handshakes_refused_total{cause="rate"}'] >= 780


def test_spoofed_xff_from_strangers_cannot_dodge_the_limit(gateway):
    g = gateway("--trusted-proxy", LB, *TIGHT, *STREAM_FLAGS, env=SMALL_ASAN)

    def attack():
        got = [status_of(g.port, headers={"X-Forwarded-For": "198.51.100.%d" % (i % 250)},
                         src=STRANGER) for i in range(300)]
        assert got.count(101) <= 10, got.count(101)

    attack_checked(g, attack, "300 handshakes with spoofed X-Forwarded-For")


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0", "10.0.0.5,0.0.0.0/0"])
def test_a_trusted_proxy_range_of_everyone_refuses_to_start(everyone):
    """--trusted-proxy 0.0.0.0/0 would believe every client's
    X-Forwarded-For and PROXY header: any client could name any address,
    walk around every per-address limit and forge the log's peer=. A
    misconfiguration, never a setting: it stops the start (exit 2)."""
    p = subprocess.run([rtgate_bin(), "--listen", "127.0.0.1:0", "--trusted-proxy", everyone],
                       capture_output=True, timeout=30)
    assert p.returncode == 2, p.stderr
    assert "every" in p.stderr.decode(), p.stderr


# ---- PROXY protocol v2 ----------------------------------------------------

def proxy_gateway(gateway, *extra, env=SMALL_ASAN):
    # 127.0.0.1 is trusted too: the fixture's probes come from it with LOCAL.
    return gateway("--proxy-protocol", "v2", "--trusted-proxy", "127.0.0.1," + LB, *extra,
                   env=env)


def hdr(src, port):
    return proxy_v2_header(src, "127.0.0.1", 40000, port)


def test_proxy_v2_from_the_balancer_names_the_client(gateway):
    g = proxy_gateway(gateway, *TIGHT, "--trusted-proxy", "192.0.2.0/24")
    p = g.port
    # X-Forwarded-For from the (untrusted) client itself is ignored.
    got = statuses(p, 5, prefix=hdr("198.51.100.7", p), src=LB,
                   headers={"X-Forwarded-For": "6.6.6.6"})
    assert got[:3] == [101] * 3 and got.count(429) >= 1, got
    assert statuses(p, 2, prefix=hdr("198.51.100.8", p), src=LB) == [101, 101]
    assert refused_lines(g, "198.51.100.7") and not refused_lines(g, LB)
    # A source that is itself a trusted proxy passes X-Forwarded-For on.
    xff = {"X-Forwarded-For": "203.0.113.50"}
    assert statuses(p, 3, prefix=hdr("192.0.2.1", p), src=LB, headers=xff) == [101] * 3
    assert statuses(p, 1, prefix=hdr("192.0.2.1", p), src=LB, headers=xff) == [429]
    assert refused_lines(g, "203.0.113.50")
    # LOCAL (the balancer's own health checks): the connection's address.
    local = proxy_v2_header("0.0.0.0", "0.0.0.0", 0, 0, command=0)
    assert statuses(p, 1, prefix=local, src=LB) == [101]


def test_proxy_v2_header_split_into_single_bytes_is_read(gateway):
    g = proxy_gateway(gateway)
    s = connect_from(g.port, LB)
    for b in hdr("198.51.100.30", g.port):
        s.sendall(bytes([b]))
        time.sleep(0.002)
    s.sendall(upgrade_request(g.port))
    assert read_response(s)[0] == 101
    s.close()


def test_proxy_v2_refuses_strangers_and_bad_headers(gateway):
    g = proxy_gateway(gateway, "--handshake-timeout-ms", "1000")
    p = g.port
    cases = [
        ("stranger", STRANGER, hdr("198.51.100.9", p)),  # spoofed: not from the balancer
        ("no header", LB, b""),
        ("v1 header", LB, b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 80\r\n"),
        ("bad version", LB, hdr("198.51.100.9", p)[:12] + b"\x31" + hdr("198.51.100.9", p)[13:]),
        ("too long", LB, hdr("198.51.100.9", p)[:14] + b"\xff\xff"),
    ]
    for name, src, prefix in cases:
        s = connect_from(p, src)
        s.sendall(prefix + upgrade_request(p))
        assert closed_by_peer(s, 5), name
        s.close()
    # A header that stops halfway is closed after --handshake-timeout-ms.
    s = connect_from(p, LB)
    s.sendall(hdr("198.51.100.9", p)[:10])
    t0 = time.monotonic()
    assert closed_by_peer(s, 6), "a stalled PROXY header was not closed"
    assert time.monotonic() - t0 >= 0.8
    s.close()
    log = g.log()
    assert "event=connection_refused peer=%s " % STRANGER in log
    assert "not a trusted proxy" in log and "v1" in log and "in time" in log
    assert "198.51.100.9" not in log
    assert g.metrics()['rtgate_handshakes_refused_total{cause="proxy"}'] == len(cases) + 1


def test_proxy_v2_with_tls(gateway, tmp_path):
    from edgekit import make_cert, client_tls
    cert, key = make_cert(str(tmp_path), "proxy-tls")
    g = proxy_gateway(gateway, "--tls-cert", cert, "--tls-key", key, *TIGHT)
    ctx = client_tls(cert)
    got = statuses(g.port, 4, prefix=hdr("198.51.100.40", g.port), src=LB, tls=ctx)
    assert got == [101, 101, 101, 429], got
    assert refused_lines(g, "198.51.100.40")


def test_a_flood_of_spoofed_and_stalled_proxy_headers_leaves_others_flowing(gateway):
    g = proxy_gateway(gateway, "--handshake-timeout-ms", "1000", *STREAM_FLAGS, env=SMALL_ASAN)
    p = g.port

    def attack():
        stalled = []
        for i in range(100):  # the balancer starts a header and stops
            s = connect_from(p, LB)
            s.sendall(hdr("198.51.100.1", p)[:7])
            stalled.append(s)
        for i in range(300):  # strangers with spoofed headers
            s = connect_from(p, "127.0.0.%d" % (3 + i % 50))
            try:
                s.sendall(hdr("198.51.100.2", p) + upgrade_request(p))
            except OSError:
                pass  # already refused
            assert closed_by_peer(s, 5)
            s.close()
        for s in stalled:
            assert closed_by_peer(s, 6)
            s.close()

    attack_checked(g, attack, "300 spoofed and 100 stalled PROXY headers", proxy_from=LB)
