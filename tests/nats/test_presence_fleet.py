"""Presence across nodes on NATS (PROTOCOL.md section 4, docs/presence.md):
near and watch events on node B for members of node A, both subprotocols;
a killed node's members gone within presence_ttl_ms and not brought back by
its restart; the subjects a node follows; many members at once."""
import asyncio
import time

from rtclient import Client, run

BERLIN = (52.5200, 13.4050)
TTL_MS = 1500


def north(m, base=BERLIN):
    return base[0] + m / 111194.9, base[1]


async def connected(url, codec):
    c = Client(url, codec)
    await c.open()
    await c.connect()
    return c


async def set_at(c, p, **kw):
    r = await c.request("geo.set", space="d", lat=p[0], lon=p[1], **kw)
    assert r["ok"] is True, r


def other(codec):
    return "msgpack" if codec == "json" else "json"


def test_near_and_watch_events_across_nodes(nats, nodes, codec):
    a, b = nodes(nats.url, 2, "--presence-ttl-ms", str(TTL_MS))

    async def go():
        m1 = await connected(a.url(), other(codec))
        m2 = await connected(a.url(), codec)
        local = await connected(b.url(), codec)
        q = await connected(b.url(), codec)
        w = await connected(b.url(), codec)
        try:
            await set_at(m1, BERLIN, meta={"car": "B-123"})
            await set_at(m2, north(300))
            await set_at(local, north(600))
            await set_at(m1, north(20000))  # far away first ...
            await set_at(m1, BERLIN, meta={"car": "B-123"})  # ... and back: the last state wins
            r = await q.request("geo.near", space="d", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=1000)
            assert r["ok"] is True and "partial" not in r, r
            got = [(x["client"], round(x["dist_m"])) for x in r["members"]]
            assert got == [(m1.connected["client"], 0), (m2.connected["client"], 300),
                           (local.connected["client"], 600)], got
            assert r["members"][0]["meta"] == {"car": "B-123"}  # set over msgpack or JSON
            assert "meta" not in r["members"][1]

            r = await w.request("geo.watch", space="d", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=1000)
            assert r["ok"] is True and len(r["members"]) == 3, r
            wid = r["watch"]
            # join: a new member on A
            j = await connected(a.url(), codec)
            await set_at(j, north(100), meta=[1, 2])
            e = await w.next_event(("geo",))
            assert (e["watch"], e["event"], e["member"]["client"]) == (
                wid, "join", j.connected["client"]), e
            assert e["member"]["meta"] == [1, 2]
            # move inside
            await set_at(m2, north(400))
            e = await w.next_event(("geo",))
            assert (e["event"], e["member"]["client"]) == ("move", m2.connected["client"]), e
            assert abs(e["member"]["lat"] - north(400)[0]) < 1e-9
            # leave by moving far away (out of the cells B follows)
            await set_at(m2, north(30000))
            e = await w.next_event(("geo",))
            assert (e["event"], e["member"]["client"]) == ("leave", m2.connected["client"]), e
            # leave by disconnect, and by clear
            await j.close()
            e = await w.next_event(("geo",))
            assert (e["event"], e["member"]["client"]) == ("leave", j.connected["client"]), e
            assert (await m1.request("geo.clear", space="d"))["ok"] is True
            e = await w.next_event(("geo",))
            assert (e["event"], e["member"]["client"]) == ("leave", m1.connected["client"]), e
            assert await w.quiet(0.3, types=("geo",)) == []

            mb = b.metrics()
            assert mb["rtgate_geo_cells_followed"] >= 1, mb
            assert mb["rtgate_geo_nodes"] == 1
            assert mb["rtgate_geo_deltas_in_total"] >= 5
            assert mb["rtgate_geo_members"] == 1  # only the local one is inside now
            ma = a.metrics()
            assert ma["rtgate_geo_cells_followed"] == 0, "A's clients asked nothing"
            assert ma["rtgate_geo_snapshots_answered_total"] >= 1
            # B's NATS subscriptions: its own control subjects and the cells it follows.
            subs = nats.subscriptions(b)
            assert any(s.startswith("rtgate.geo.d.d.") for s in subs), subs
            assert not any(s.startswith("rtgate.geo.d.") for s in nats.subscriptions(a))
        finally:
            for c in (m1, m2, local, q, w):
                await c.close(check=False)
    run(go())


def test_killed_node_expires_within_ttl_and_its_restart_brings_nothing_back(nats, nodes):
    a, b = nodes(nats.url, 2, "--presence-ttl-ms", str(TTL_MS))

    async def go():
        w = await connected(b.url(), "json")
        members = [await connected(a.url(), "json") for _ in range(5)]
        for i, c in enumerate(members):
            await set_at(c, north(50 * i))
        r = await w.request("geo.watch", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=1000)
        assert r["ok"] is True, r
        deadline = time.monotonic() + 5
        while len(r["members"]) < 5 and time.monotonic() < deadline:  # sets may still travel
            await asyncio.sleep(0.1)
            r = await w.request("geo.near", space="d", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=1000)
        assert len(r["members"]) == 5, r

        a._kill()  # kill -9: no goodbye
        a.expected_rc = -9
        killed = time.monotonic()
        left = set()
        while len(left) < 5:
            e = await w.next_event(("geo",), timeout=TTL_MS / 1000 + 3)
            assert e["event"] == "leave", e
            left.add(e["member"]["client"])
        took = time.monotonic() - killed
        assert left == {c.connected["client"] for c in members}
        # gone within the TTL (plus the 250 ms sweep), and not before most of it ran out
        assert 0.5 < took < TTL_MS / 1000 + 1.0, took
        r = await w.request("geo.near", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=1000)
        assert r["members"] == [], r
        assert b.metrics()["rtgate_geo_nodes_expired_total"] == 1

        a.start()  # the same node (same --node-id) restarts
        a.expected_rc = 0
        await asyncio.sleep(TTL_MS / 1000)  # heartbeats, hellos, resyncs
        assert await w.quiet(0.5, types=("geo",)) == [], "old members came back"
        r = await w.request("geo.near", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=1000)
        assert r["members"] == [], r
        # the restarted node's new members do arrive
        n = await connected(a.url(), "json")
        await set_at(n, north(10))
        e = await w.next_event(("geo",))
        assert (e["event"], e["member"]["client"]) == ("join", n.connected["client"]), e
        for c in [w, n] + members:
            await c.close(check=False)
    run(go())


def test_many_members_join_at_once(nats, nodes):
    """400 members join on A while B watches: B gets every join, A publishes
    them in far fewer bus messages than members."""
    a, b = nodes(nats.url, 2, "--geo-rate", "1000", "--geo-burst", "1000")

    async def go():
        w = await connected(b.url(), "msgpack")
        r = await w.request("geo.watch", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=2000)
        assert r["ok"] is True and r["members"] == [], r
        before = a.metrics()["rtgate_geo_bus_messages_out_total"]
        clients = [await connected(a.url(), "json") for _ in range(400)]
        await asyncio.gather(*(set_at(c, north(i)) for i, c in enumerate(clients)))
        joined = set()
        while len(joined) < 400:
            e = await w.next_event(("geo",), timeout=10)
            assert e["event"] == "join", e
            joined.add(e["member"]["client"])
        assert joined == {c.connected["client"] for c in clients}
        sent = a.metrics()["rtgate_geo_bus_messages_out_total"] - before
        assert sent < 200, "%d bus messages for 400 joins" % sent
        for c in [w] + clients:
            await c.close(check=False)
    run(go())


def test_garbage_on_presence_subjects_is_dropped(nats, nodes):
    """Anyone on NATS can publish on rtgate.geo.*: malformed messages are
    counted and dropped, and presence keeps working."""
    import random
    from natsraw import RawNats
    a, b = nodes(nats.url, 2)
    raw = RawNats(nats.url)
    rnd = random.Random(5)

    async def go():
        m = await connected(a.url(), "json")
        q = await connected(b.url(), "json")
        await set_at(m, BERLIN)
        r = await q.request("geo.near", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=100)
        assert len(r["members"]) == 1, r
        cell = "rtgate.geo.d.d." + ".".join("u33dc")
        for i in range(300):
            blob = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 200)))
            if i % 3 == 0:
                blob = b"\x85" + blob  # a msgpack map: parsing goes deeper
            for subj in ("rtgate.geo.hb", "rtgate.geo.s", cell, "rtgate.geo.r.x"):
                raw.pub(subj, blob)
        raw.flush()
        await set_at(m, north(10))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if b.metrics()["rtgate_geo_bus_bad_total"] >= 300:
                break
            await asyncio.sleep(0.1)
        assert b.metrics()["rtgate_geo_bus_bad_total"] >= 300
        # The move reaches B on A's connection, the garbage on another one: no
        # order between them, so wait for the move (a lost one would not come).
        deadline = time.monotonic() + 5
        while True:
            r = await q.request("geo.near", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=100)
            assert [x["client"] for x in r["members"]] == [m.connected["client"]], r
            if abs(r["members"][0]["lat"] - north(10)[0]) < 1e-9:
                break
            assert time.monotonic() < deadline, "the move never reached node B: %r" % r
            await asyncio.sleep(0.05)
        await m.close()
        await q.close()
    run(go())
    raw.close()


def test_drained_node_members_leave_at_once(nats, nodes):
    """SIGTERM (drain): the node's connections close and their leaves are
    published before it exits, long before the TTL."""
    a, b = nodes(nats.url, 2, "--presence-ttl-ms", "20000", "--drain-ms", "200")

    async def go():
        w = await connected(b.url(), "json")
        r = await w.request("geo.watch", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=1000)
        assert r["ok"] is True, r
        ms = [await connected(a.url(), "json") for _ in range(3)]
        for i, c in enumerate(ms):
            await set_at(c, north(10 * i))
        for _ in ms:
            assert (await w.next_event(("geo",)))["event"] == "join"
        t0 = time.monotonic()
        a.sigterm()
        left = set()
        while len(left) < 3:
            e = await w.next_event(("geo",), timeout=10)
            assert e["event"] == "leave", e
            left.add(e["member"]["client"])
        assert time.monotonic() - t0 < 5, "leaves waited for the TTL"
        assert a.wait_exit(15) == 0
        await w.close()
        for c in ms:
            await c.close(check=False)
    run(go())


def test_presence_converges_after_nats_restarts(nats, nodes):
    """nats-server dies while members on A move, clear and disconnect; once it
    is back, B's near and B's watch (built from events) equal the truth."""
    a, b = nodes(nats.url, 2, "--presence-ttl-ms", "2000")

    def near(p=BERLIN):
        return p, 2000

    async def go():
        w = await connected(b.url(), "json")
        r = await w.request("geo.watch", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=2000)
        assert r["ok"] is True, r
        inside = {}  # client -> lat, from the watch reply and its events
        ms = [await connected(a.url(), "json") for _ in range(10)]
        truth = {}
        for i, c in enumerate(ms):
            p = north(100 * i)
            await set_at(c, p)
            truth[c.connected["client"]] = p[0]

        def apply(e):
            cid = e["member"]["client"]
            if e["event"] == "leave":
                inside.pop(cid, None)
            else:
                inside[cid] = e["member"]["lat"]

        async def settle(timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    apply(await w.next_event(("geo",), timeout=0.2))
                    continue
                except asyncio.TimeoutError:
                    pass
                r = await w.request("geo.near", space="d", lat=BERLIN[0], lon=BERLIN[1],
                                    radius_m=2000)
                got = {x["client"]: x["lat"] for x in r["members"]}
                if got == truth and inside == truth and "partial" not in r:
                    return
            raise AssertionError("not converged: near %r, watch %r, truth %r"
                                 % (got, inside, truth))

        await settle(10)
        nats.kill()
        # While NATS is away: moves inside, moves out, a clear, a disconnect.
        for i, c in enumerate(ms[:4]):
            p = north(100 * i + 50)
            await set_at(c, p)
            truth[c.connected["client"]] = p[0]
        await set_at(ms[4], north(40000))
        del truth[ms[4].connected["client"]]
        assert (await ms[5].request("geo.clear", space="d"))["ok"] is True
        del truth[ms[5].connected["client"]]
        await ms[6].close()
        del truth[ms[6].connected["client"]]
        await asyncio.sleep(2.5)  # past the TTL: B drops A's members meanwhile
        nats.start()
        await settle(15)
        mb = b.metrics()
        assert mb["rtgate_geo_resyncs_total"] >= 1, mb
        for c in [w] + ms:
            await c.close(check=False)
    run(go())


FLOOD = r"""
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.recv(4096)
s.sendall(b'CONNECT {"verbose":false}\r\n')
msg = b"PUB rtgate.geo.d.d.u.3.3.d.c 5\r\nhello\r\n" * 200
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendall(msg)
"""


def test_shutdown_under_a_flood_of_bus_messages_is_clean(nats, gateway):
    """SIGTERM while NATS floods a followed cell: the gateway exits 0 with no
    sanitizer report (the fixture reads its log). nats.c's delivery pool used
    to leak the messages still queued for subscriptions closed at shutdown:
    they were freed after nats_CloseAndWait had stopped nats.c's garbage
    collector (about 1 run of this test in 10; a drain before the close made
    it rarer, not gone). The engine now waits for every pool subscription's
    completion before nats_CloseAndWait (fanout/nats_close.c)."""
    import subprocess
    from conftest import FAST
    for _ in range(8):
        g = gateway("--nats", nats.url, "--drain-ms", "100", *FAST)

        async def watch():
            w = await connected(g.url(), "json")
            r = await w.request("geo.watch", space="d", lat=BERLIN[0], lon=BERLIN[1],
                                radius_m=500)
            assert r["ok"] is True, r
            flood = subprocess.Popen(["/usr/bin/python3", "-c", FLOOD, str(nats.port), "3"])
            try:
                await asyncio.sleep(0.8)
                g.sigterm()  # the client keeps answering while the gateway exits
                rc = await asyncio.get_running_loop().run_in_executor(None, g.wait_exit, 15)
                assert rc == 0
            finally:
                flood.kill()
                flood.wait()
            await w.close(check=False)
        run(watch())
        problems = g.stop_and_check()
        assert not problems, "\n".join(problems)


def test_publish_interval_batches_changes(nats, nodes):
    """--geo-publish-ms: changes made within one interval leave as one bus
    message per cell, and still arrive."""
    a, b = nodes(nats.url, 2, "--geo-publish-ms", "300", "--geo-rate", "1000",
                 "--geo-burst", "1000")

    async def go():
        w = await connected(b.url(), "json")
        r = await w.request("geo.watch", space="d", lat=BERLIN[0], lon=BERLIN[1], radius_m=500)
        assert r["ok"] is True, r
        cs = [await connected(a.url(), "json") for _ in range(40)]
        await asyncio.sleep(0.4)  # past any interval the connects started
        before = a.metrics()["rtgate_geo_bus_messages_out_total"]
        for i, c in enumerate(cs):  # 40 sets over ~200 ms: every one in its own loop iteration
            await set_at(c, north(i))
            await asyncio.sleep(0.005)
        got = set()
        while len(got) < 40:
            e = await w.next_event(("geo",), timeout=3)
            got.add(e["member"]["client"])
        sent = a.metrics()["rtgate_geo_bus_messages_out_total"] - before
        assert sent <= 5, "%d bus messages for 40 sets in one cell" % sent
        for c in [w] + cs:
            await c.close(check=False)
    run(go())
