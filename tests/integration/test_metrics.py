"""/metrics (Prometheus text): the counters issue 2 asks for exist and move."""
import asyncio

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
            assert typ in ("counter", "gauge"), line
            names.add(name)
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
