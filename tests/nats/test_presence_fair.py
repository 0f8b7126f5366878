"""The follow budget is fair per connection (docs/presence.md, Bounds): one
client querying many new areas gets 429 with retry_after_ms once it holds its
share (--geo-max-follows-per-conn) of the cells the node follows, while the
other clients still get theirs; many clients together still meet the node cap
(--geo-max-follows, 503); a watch's cells count against the watcher; a closed
connection's cells count for nobody any more."""
import asyncio
import time

from rtclient import Client, run


def area(i):
    """Areas far apart (0.5 degree steps): a 20 m circle there is one share cell."""
    return -60.0 + 0.5 * (i % 240), -170.0 + 0.5 * (i // 240) + 0.00011


async def connected(url, codec="json"):
    c = Client(url, codec)
    await c.open()
    await c.connect()
    return c


async def near(c, i, space="d"):
    lat, lon = area(i)
    return await c.request("geo.near", space=space, lat=lat, lon=lon, radius_m=20)


async def spray(c, first, count):
    """Near queries on areas first.. until one is refused; (answered, refusal or None)."""
    ok = 0
    for i in range(first, first + count):
        r = await near(c, i)
        if not r["ok"]:
            return ok, r
        ok += 1
    return ok, None


def wait_metric(gw, name, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = gw.metrics()[name]
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_a_sprayer_gets_429_and_another_client_still_gets_new_areas(nats, nodes):
    a, b = nodes(nats.url, 2, "--geo-max-follows", "40", "--geo-max-follows-per-conn", "8")

    async def go():
        member = await connected(a.url())
        sprayer = await connected(b.url())
        other = await connected(b.url(), "msgpack")
        try:
            lat, lon = area(1000)
            r = await member.request("geo.set", space="d", lat=lat, lon=lon)
            assert r["ok"] is True, r
            ok, refused = await spray(sprayer, 0, 50)  # more than the node cap
            assert refused is not None, "never refused"
            assert refused["error"]["code"] == 429, refused
            assert refused["error"]["reason"] == "rate_limited"
            assert refused["error"]["retry_after_ms"] > 0, refused
            assert ok == 8, ok
            # The sprayer is refused new areas only: a followed one still answers.
            assert (await near(sprayer, 0))["ok"] is True
            # Another client's first query on a new area: followed, answered, with node A's member.
            r = await near(other, 1000)
            assert r["ok"] is True, r
            assert [m["client"] for m in r["members"]] == [member.connected["client"]], r
            m = b.metrics()
            assert m["rtgate_geo_follows_refused_share_total"] == 1, m
            assert m["rtgate_geo_follows_refused_limit_total"] == 0, m
            assert m["rtgate_geo_follow_conns"] == 2, m
            assert m["rtgate_geo_cells_followed"] == 9, m
        finally:
            for c in (member, sprayer, other):
                await c.close(check=False)
    run(go())


def test_many_connections_together_still_meet_the_node_cap_with_503(nats, nodes):
    _, b = nodes(nats.url, 2, "--geo-max-follows", "12", "--geo-max-follows-per-conn", "4")

    async def go():
        clients = [await connected(b.url()) for _ in range(5)]
        try:
            refused, answered = None, 0
            for i in range(40):  # round robin: nobody reaches its share of 4 first
                r = await near(clients[i % 5], i)
                if not r["ok"]:
                    refused = r
                    break
                answered += 1
            assert refused is not None
            assert refused["error"]["code"] == 503, refused
            assert refused["error"]["retry_after_ms"] > 0, refused
            assert answered == 12
            m = b.metrics()
            assert m["rtgate_geo_cells_followed"] == 12, m
            assert m["rtgate_geo_follows_refused_limit_total"] == 1, m
            assert m["rtgate_geo_follows_refused_share_total"] == 0, m
        finally:
            for c in clients:
                await c.close(check=False)
    run(go())


def test_closing_the_sprayer_frees_its_share_and_its_cells_lapse(nats, nodes):
    _, b = nodes(nats.url, 2, "--geo-max-follows", "40", "--geo-max-follows-per-conn", "4",
                 "--geo-follow-linger-ms", "1500")

    async def go():
        sprayer = await connected(b.url())
        ok, refused = await spray(sprayer, 0, 20)
        assert ok == 4 and refused["error"]["code"] == 429, (ok, refused)
        assert refused["error"]["retry_after_ms"] == 1500, refused
        assert b.metrics()["rtgate_geo_follow_conns"] == 1
        await sprayer.close()
        # Its cells linger (for the node cap), charged to nobody.
        assert wait_metric(b, "rtgate_geo_follow_conns", 0) == 0
        assert b.metrics()["rtgate_geo_cells_followed"] == 4
        # A client that stops spraying for retry_after_ms gets its share back.
        again = await connected(b.url())
        try:
            ok, refused = await spray(again, 100, 20)
            assert ok == 4 and refused["error"]["code"] == 429, (ok, refused)
            await asyncio.sleep(refused["error"]["retry_after_ms"] / 1000 + 1.0)
            assert wait_metric(b, "rtgate_geo_cells_followed", 0) == 0
            assert wait_metric(b, "rtgate_geo_follow_conns", 0) == 0
            ok, refused = await spray(again, 200, 20)
            assert ok == 4 and refused["error"]["code"] == 429, (ok, refused)
        finally:
            await again.close(check=False)
    run(go())


def test_watches_count_against_the_watchers_share(nats, nodes):
    _, b = nodes(nats.url, 2, "--geo-max-follows", "40", "--geo-max-follows-per-conn", "3")

    async def go():
        querier = await connected(b.url())
        watcher = await connected(b.url())
        try:
            assert (await near(querier, 0))["ok"] is True
            # The watch takes over the charge of the cell it holds (the last holder pays) ...
            watches = []
            for i in range(3):
                lat, lon = area(i)
                r = await watcher.request("geo.watch", space="d", lat=lat, lon=lon, radius_m=20)
                assert r["ok"] is True, r
                watches.append(r["watch"])
            lat, lon = area(3)
            r = await watcher.request("geo.watch", space="d", lat=lat, lon=lon, radius_m=20)
            assert r["ok"] is False and r["error"]["code"] == 429, r
            assert r["error"]["retry_after_ms"] > 0
            # ... so the querier is charged with nothing and may query 3 new areas again.
            ok, refused = await spray(querier, 10, 10)
            assert ok == 3 and refused["error"]["code"] == 429, (ok, refused)
            # Closing the watcher ends its holds and its charge.
            await watcher.close()
            assert wait_metric(b, "rtgate_geo_follow_conns", 1) == 1
        finally:
            await querier.close(check=False)
            await watcher.close(check=False)
    run(go())
