"""Handshake: subprotocol negotiation (PROTOCOL.md 1), HTTP endpoints, per-IP
handshake rate (HTTP 429 + Retry-After) and node admission (HTTP 503)."""
import asyncio
import time

import pytest

from rtclient import Client, SUBPROTOCOLS, handshake_status, raw_handshake, run


def test_healthz_readyz_and_unknown_paths(gateway):
    g = gateway()
    status, _, body = g.http_get("/healthz")
    assert status == 200
    status, _, _ = g.http_get("/readyz")
    assert status == 200
    status, _, _ = g.http_get("/no-such-thing")
    assert status == 404
    # A plain GET of the WebSocket path is not an upgrade.
    status, _, _ = g.http_get("/ws")
    assert status in (400, 426)


def test_no_subprotocol_gets_json_without_header(gateway):
    g = gateway()

    async def go():
        # Raw: the response must not carry Sec-WebSocket-Protocol (RFC 6455 4.2.2).
        status, headers, s = raw_handshake(g.port, protocols=None)
        s.close()
        assert status == 101
        assert "sec-websocket-protocol" not in headers, headers
        async with Client(g.url(), codec=None) as c:
            assert c.ws.subprotocol is None
            assert "Sec-WebSocket-Protocol" not in c.ws.response_headers
            r = await c.connect()
            assert r["node"] == g.node_id
            await c.ping()
            assert (await c.next_event(("pong",)))["type"] == "pong"
        # The client asserts every frame was text and parsed as JSON objects.
    run(go())


def test_only_unknown_subprotocol_is_refused_400(gateway):
    g = gateway()
    status, _ = run(handshake_status(g.url(), ["chat", "rtgate.v2.json"])())
    assert status == 400
    status, _, s = raw_handshake(g.port, protocols=["bogus"])
    s.close()
    assert status == 400
    m = g.metrics()
    assert m['rtgate_handshakes_refused_total{cause="bad_request"}'] >= 2


@pytest.mark.parametrize("offer,chosen", [
    (["rtgate.v1.msgpack"], "rtgate.v1.msgpack"),
    (["rtgate.v1.json"], "rtgate.v1.json"),
    (["bogus", "rtgate.v1.msgpack"], "rtgate.v1.msgpack"),
    (["rtgate.v1.json", "rtgate.v1.msgpack"], None),  # either; the frames must match it
])
def test_subprotocol_negotiation(gateway, offer, chosen):
    g = gateway()

    async def go():
        async with Client(g.url(), codec="json", subprotocols=offer) as c:
            assert c.ws.subprotocol in SUBPROTOCOLS.values()
            if chosen:
                assert c.ws.subprotocol == chosen
            assert c.ws.response_headers.get("Sec-WebSocket-Protocol") == c.ws.subprotocol
            await c.connect()
            await c.ping()
            await c.next_event(("pong",))
            assert c.frames >= 2  # and every frame had the type of the chosen subprotocol
    run(go())


def test_per_ip_handshake_rate_429_with_retry_after(gateway):
    g = gateway("--ip-conn-rate", "2", "--ip-conn-burst", "2")
    socks = []
    try:
        results = []
        for _ in range(3):
            status, headers, s = raw_handshake(g.port, protocols=[SUBPROTOCOLS["json"]])
            socks.append(s)
            results.append((status, headers))
        assert [r[0] for r in results[:2]] == [101, 101]
        status, headers = results[2]
        assert status == 429, results
        assert "retry-after" in headers, headers
        ra = int(headers["retry-after"])
        assert 1 <= ra <= 2, "Retry-After %d s for a 2/s bucket" % ra
        m = g.metrics()
        assert m['rtgate_handshakes_refused_total{cause="rate"}'] == 1
        # After the advertised delay the address may connect again.
        time.sleep(ra)
        status, _, s = raw_handshake(g.port, protocols=[SUBPROTOCOLS["json"]])
        socks.append(s)
        assert status == 101
    finally:
        for s in socks:
            s.close()


def test_a_flood_of_refused_handshakes_writes_a_bounded_log(gateway):
    """Refusing a handshake costs the client a TCP connection; a log line per
    refusal would let one client write the gateway's log as fast as it can
    connect (~650 KB/s from one Python process here). At most 20 refusal lines
    a second; then a line counts the ones not written, and the metrics count
    them all."""
    from edgekit import handshake
    g = gateway("--ip-conn-rate", "1", "--ip-conn-burst", "1")
    t0 = time.monotonic()
    for _ in range(600):
        status, _, _, s = handshake(g.port)
        s.close()
    elapsed = time.monotonic() - t0
    time.sleep(1.1)
    # A refusal in a later second: the count of the lines skipped comes out.
    for _ in range(3):
        status, _, _, s = handshake(g.port)
        s.close()
        if status == 429:
            break
    assert status == 429
    refused = g.metrics()['rtgate_handshakes_refused_total{cause="rate"}']
    assert refused >= 599
    log = g.log().splitlines()
    lines = [l for l in log if "event=handshake_refused " in l]
    assert len(lines) <= 20 * (elapsed + 3), (len(lines), elapsed)
    counts = [int(l.split("count=")[1].split()[0]) for l in log
              if "event=handshakes_refused_not_logged " in l]
    assert len(lines) + sum(counts) == refused, (len(lines), counts, refused)


def test_max_connections_503(gateway):
    g = gateway("--max-connections", "3")

    async def go():
        cs = []
        try:
            for i in range(3):
                c = Client(g.url(), "json", name="c%d" % i)
                await c.open()
                await c.connect()
                cs.append(c)
            status, _ = await handshake_status(g.url(), [SUBPROTOCOLS["json"]])()
            assert status == 503
            m = g.metrics()
            assert m["rtgate_connections"] == 3
            assert m['rtgate_handshakes_refused_total{cause="capacity"}'] == 1
            # A freed place is available again.
            await cs.pop().close()
            for _ in range(50):
                if g.metrics()["rtgate_connections"] == 2:
                    break
                await asyncio.sleep(0.05)
            c = Client(g.url(), "msgpack")
            await c.open()
            cs.append(c)
            await c.connect()
        finally:
            for c in cs:
                await c.close()
    run(go())
