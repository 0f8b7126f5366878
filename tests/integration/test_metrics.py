"""/metrics (Prometheus text): the counters issue 2 asks for exist and move."""
import asyncio
import time

from rtclient import Client, run

REQUIRED = [
    "rtgate_connections", "rtgate_connections_total", "rtgate_messages_in_total",
    "rtgate_messages_out_total", "rtgate_frames_in_total", "rtgate_frames_out_total",
    "rtgate_bytes_in_total", "rtgate_bytes_out_total", "rtgate_rate_limited_total",
    "rtgate_outbox_bytes", "rtgate_drops_total", "rtgate_published_total",
    "rtgate_deliveries_total", 'rtgate_errors_total{code="400",reason="bad_request"}',
    'rtgate_errors_total{code="429",reason="rate_limited"}',
    'rtgate_handshakes_refused_total{cause="rate"}',
]


def test_metrics_format_and_counters(gateway, codec):
    g = gateway("--pub-rate", "1", "--pub-burst", "1")
    status, headers, body = g.http_get("/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    names = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram"), line
            names.add(name)
            if typ == "histogram":
                names.update(name + sfx for sfx in ("_bucket", "_sum", "_count"))
    m0 = g.metrics()
    for k in REQUIRED:
        assert k in m0, k
    for k in m0:
        assert k.split("{")[0] in names, "no # TYPE line for %s" % k
    assert m0["rtgate_connections"] == 0

    async def go():
        async with Client(g.url(), codec) as c, Client(g.url(), codec) as s:
            await c.connect()
            await s.connect()
            await s.sub("met.room")
            m1 = g.metrics()
            assert m1["rtgate_connections"] == 2
            assert m1["rtgate_connections_total"] == m0["rtgate_connections_total"] + 2
            await c.pub("met.room", "hello")              # accepted
            r = await c.pub("met.room", "again")          # 429
            assert r["error"]["code"] == 429
            r = await c.sub("bad..name")                  # 400
            assert r["error"]["code"] == 400
            await s.next_event(("msg",))
            m2 = g.metrics()
            assert m2["rtgate_messages_in_total"] - m1["rtgate_messages_in_total"] == 3
            assert m2["rtgate_published_total"] - m1["rtgate_published_total"] == 1
            assert m2["rtgate_deliveries_total"] - m1["rtgate_deliveries_total"] == 1
            assert m2["rtgate_rate_limited_total"] - m1["rtgate_rate_limited_total"] == 1
            k400 = 'rtgate_errors_total{code="400",reason="bad_request"}'
            assert m2[k400] - m1[k400] == 1
            assert m2["rtgate_frames_in_total"] > m1["rtgate_frames_in_total"]
            assert m2["rtgate_bytes_in_total"] > m1["rtgate_bytes_in_total"]
            assert m2["rtgate_messages_out_total"] > m1["rtgate_messages_out_total"]
            assert m2["rtgate_bytes_out_total"] > m1["rtgate_bytes_out_total"]
            assert m2["rtgate_outbox_bytes"] >= 0
        for _ in range(50):
            if g.metrics()["rtgate_connections"] == 0:
                break
            await asyncio.sleep(0.05)
        assert g.metrics()["rtgate_connections"] == 0
    run(go())


def histogram(m, name):
    """{le: cumulative count} of one histogram in g.metrics()."""
    out = {}
    for k, v in m.items():
        if k.startswith(name + '_bucket{le="'):
            le = k[len(name + '_bucket{le="'):-2]
            out[float(le)] = v
    return out


def test_fleet_operator_metrics(gateway, codec):
    """Issue 14: latency histograms (delivery from the message's accept time,
    publish to reply), closes by code and initiator, build info, the loop's
    busy time and readiness."""
    g = gateway()
    m0 = g.metrics()
    info = [k for k in m0 if k.startswith("rtgate_build_info{")]
    assert len(info) == 1 and 'engine="memory"' in info[0] and m0[info[0]] == 1, info
    assert m0["rtgate_ready"] == 1 and m0["rtgate_backend_ready"] == 1
    assert m0["rtgate_delivery_latency_seconds_count"] == 0
    n_msgs = 20

    async def go():
        s = Client(g.url(), codec, name="s")
        p = Client(g.url(), codec, name="p")
        await s.open()
        await p.open()
        await s.connect()
        await p.connect()
        await s.sub("lat.room")
        for i in range(n_msgs):
            await p.pub("lat.room", i)
        await s.collect(n_msgs)
        await s.close()  # the client closes: 1000 by client
        p._pending.clear()
        p.ws.transport.abort()  # vanishes without a close frame: 1006 by client
        for _ in range(100):
            if g.metrics()["rtgate_connections"] == 0:
                break
            await asyncio.sleep(0.05)
    run(go())
    m = g.metrics()
    assert m["rtgate_delivery_latency_seconds_count"] == n_msgs
    h = histogram(m, "rtgate_delivery_latency_seconds")
    assert h[float("inf")] == n_msgs and sorted(h.values()) == [h[k] for k in sorted(h)]
    # Loopback, one process: a delivery takes well under a second (bounds are
    # cumulative: everything is at or below the 1.024 s bucket).
    assert h[1.024] == n_msgs, h
    assert m["rtgate_publish_latency_seconds_count"] == n_msgs
    assert 0 <= m["rtgate_publish_latency_seconds_sum"] < n_msgs * 1.0
    assert m['rtgate_closes_total{code="1000",by="client"}'] == 1
    assert m['rtgate_closes_total{code="1006",by="client"}'] == 1
    assert m["rtgate_loop_busy_seconds_total"] > m0["rtgate_loop_busy_seconds_total"]
    assert 0 <= m["rtgate_loop_busy_ratio"] <= 1


def test_server_closes_are_counted_by_code(gateway):
    g = gateway("--connect-timeout-ms", "300")

    async def go():
        c = Client(g.url(), "json")
        await c.open()
        await c.expect_disconnect(4001, timeout=10)
        await c.close(check=False)
    run(go())
    for _ in range(100):
        m = g.metrics()
        if m['rtgate_closes_total{code="4001",by="server"}'] == 1:
            break
        time.sleep(0.05)
    assert m['rtgate_closes_total{code="4001",by="server"}'] == 1, m
