"""Presence on one node (PROTOCOL.md section 4): geo.set / clear / near /
watch / unwatch and the join / move / leave events, in both subprotocols."""
import math
import random

from rtclient import Client, run

BERLIN = (52.5200, 13.4050)


def metres_north(lat, lon, m):
    """The point m metres north of (lat, lon)."""
    return lat + m / 111194.9, lon


def haversine(a, b):
    r = 6371008.8
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(h))


def test_set_and_near_nearest_first_with_limit_and_meta(gateway, codec):
    g = gateway()

    async def go():
        clients = [Client(g.url(), codec) for _ in range(5)]
        for c in clients:
            await c.open()
            await c.connect()
        try:
            for i, c in enumerate(clients):
                lat, lon = metres_north(*BERLIN, 100 * i)
                r = await c.request("geo.set", space="drivers", lat=lat, lon=lon,
                                    meta={"car": "B-%d" % i})
                assert r["ok"] is True and len(r["cell"]) == 6, r
            assert (await clients[0].request("geo.set", space="drivers", lat=BERLIN[0],
                                             lon=BERLIN[1]))["cell"] == "u33dc0"
            q = clients[0]
            r = await q.request("geo.near", space="drivers", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=250)
            got = [m["client"] for m in r["members"]]
            ids = [c.connected["client"] for c in clients]
            assert got == ids[:3], r  # 0, 100, 200 m; 300 m is outside 250 m
            assert [round(m["dist_m"]) for m in r["members"]] == [0, 100, 200]
            assert r["members"][1]["meta"] == {"car": "B-1"}
            assert "meta" not in r["members"][0]  # the second set had no meta: replaced
            assert r["members"][1]["user"] == clients[1].connected["user"]
            r = await q.request("geo.near", space="drivers", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=5000, limit=2)
            assert [m["client"] for m in r["members"]] == ids[:2]
            # Another space is another population.
            r = await q.request("geo.near", space="riders", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=5000)
            assert r["members"] == []
            # Clear removes; a disconnect removes.
            assert (await clients[1].request("geo.clear", space="drivers"))["ok"] is True
            await clients[2].close()
            r = await q.request("geo.near", space="drivers", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=5000)
            assert [m["client"] for m in r["members"]] == [ids[0], ids[3], ids[4]]
        finally:
            for c in clients:
                await c.close()
    run(go())


def test_near_matches_brute_force_on_random_population(gateway):
    g = gateway("--geo-rate", "100000", "--geo-burst", "100000")
    rnd = random.Random(7)

    async def go():
        pts = {}
        clients = []
        for _ in range(40):
            c = Client(g.url(), "json")
            await c.open()
            await c.connect()
            p = (BERLIN[0] + rnd.uniform(-0.05, 0.05), BERLIN[1] + rnd.uniform(-0.08, 0.08))
            await c.request("geo.set", space="s", lat=p[0], lon=p[1])
            pts[c.connected["client"]] = p
            clients.append(c)
        try:
            for _ in range(30):
                q = (BERLIN[0] + rnd.uniform(-0.05, 0.05), BERLIN[1] + rnd.uniform(-0.08, 0.08))
                radius = rnd.uniform(100, 8000)
                r = await clients[0].request("geo.near", space="s", lat=q[0], lon=q[1],
                                             radius_m=radius, limit=1000)
                want = sorted((haversine(q, p), cid) for cid, p in pts.items()
                              if haversine(q, p) <= radius)
                assert [m["client"] for m in r["members"]] == [cid for _, cid in want]
        finally:
            for c in clients:
                await c.close()
    run(go())


def test_watch_join_move_leave_and_disconnect(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as w, Client(g.url(), codec) as a, \
                Client(g.url(), codec) as b:
            for c in (w, a, b):
                await c.connect()
            inside = metres_north(*BERLIN, 200)
            await b.request("geo.set", space="d", lat=inside[0], lon=inside[1])
            r = await w.request("geo.watch", space="d", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=1000)
            assert r["ok"] is True and r["watch"].startswith("w"), r
            wid = r["watch"]
            assert [m["client"] for m in r["members"]] == [b.connected["client"]]
            aid = a.connected["client"]
            # join
            await a.request("geo.set", space="d", lat=BERLIN[0], lon=BERLIN[1], meta={"x": 1})
            e = await w.next_event(("geo",))
            assert (e["watch"], e["event"], e["member"]["client"]) == (wid, "join", aid), e
            assert e["member"]["meta"] == {"x": 1}
            # move inside
            p = metres_north(*BERLIN, 500)
            await a.request("geo.set", space="d", lat=p[0], lon=p[1])
            e = await w.next_event(("geo",))
            assert (e["event"], e["member"]["client"]) == ("move", aid), e
            assert abs(e["member"]["lat"] - p[0]) < 1e-9
            # leave by moving out
            p = metres_north(*BERLIN, 5000)
            await a.request("geo.set", space="d", lat=p[0], lon=p[1])
            e = await w.next_event(("geo",))
            assert (e["event"], e["member"]["client"]) == ("leave", aid), e
            # moving around outside says nothing
            p = metres_north(*BERLIN, 6000)
            await a.request("geo.set", space="d", lat=p[0], lon=p[1])
            assert await w.quiet(0.3, types=("geo",)) == []
            # leave by disconnect
            bid = b.connected["client"]
            await b.close()
            e = await w.next_event(("geo",))
            assert (e["event"], e["member"]["client"]) == ("leave", bid), e
            # unwatch: no more events; a second unwatch is 404
            assert (await w.request("geo.unwatch", watch=wid))["ok"] is True
            await a.request("geo.set", space="d", lat=BERLIN[0], lon=BERLIN[1])
            assert await w.quiet(0.3, types=("geo",)) == []
            r = await w.request("geo.unwatch", watch=wid)
            assert r["ok"] is False and r["error"]["code"] == 404
            # someone else's watch is not yours
            r2 = await w.request("geo.watch", space="d", lat=0, lon=0, radius_m=10)
            r = await a.request("geo.unwatch", watch=r2["watch"])
            assert r["error"]["code"] == 404
    run(go())


def test_bad_geo_requests_get_400_413_and_connection_stays(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as c:
            await c.connect()
            bad = [
                ("geo.set", dict(space="d", lat=90.5, lon=0)),
                ("geo.set", dict(space="d", lat=0, lon=-180.01)),
                ("geo.set", dict(space="bad space", lat=0, lon=0)),
                ("geo.set", dict(space="d", lat="52", lon=0)),
                ("geo.near", dict(space="d", lat=0, lon=0, radius_m=50001)),
                ("geo.near", dict(space="d", lat=0, lon=0, radius_m=10, limit=1001)),
                ("geo.watch", dict(space="d", lat=-91, lon=0, radius_m=10)),
                ("geo.near", dict(space="d", lat=0, lon=0)),
            ]
            for t, f in bad:
                r = await c.request(t, **f)
                assert r["ok"] is False and r["error"]["code"] == 400, (t, f, r)
            r = await c.request("geo.set", space="d", lat=0, lon=0, meta={"blob": "x" * 1100})
            assert r["ok"] is False and r["error"]["code"] == 413, r
            assert (await c.request("geo.set", space="d", lat=0, lon=0))["ok"] is True
    run(go())


def test_geo_set_rate_limited_with_retry_after(gateway):
    g = gateway("--geo-rate", "2", "--geo-burst", "2")

    async def go():
        async with Client(g.url(), "json") as c:
            await c.connect()
            replies = [await c.request("geo.set", space="d", lat=0, lon=0) for _ in range(3)]
            assert [r["ok"] for r in replies] == [True, True, False]
            err = replies[2]["error"]
            assert err["code"] == 429 and 0 < err["retry_after_ms"] <= 500, err
    run(go())


def test_presence_metrics(gateway):
    g = gateway()

    async def go():
        async with Client(g.url(), "json") as w, Client(g.url(), "json") as a:
            await w.connect()
            await a.connect()
            await w.request("geo.watch", space="m", lat=BERLIN[0], lon=BERLIN[1], radius_m=100)
            await a.request("geo.set", space="m", lat=BERLIN[0], lon=BERLIN[1])
            await w.next_event(("geo",))
            await a.request("geo.near", space="m", lat=BERLIN[0], lon=BERLIN[1], radius_m=10)
            m = g.metrics()
            assert m["rtgate_geo_members"] == 1 and m["rtgate_geo_watches"] == 1, m
            assert m["rtgate_geo_sets_total"] == 1 and m["rtgate_geo_events_total"] == 1
            assert m["rtgate_geo_queries_total"] >= 2  # near + the watch's snapshot
    run(go())
