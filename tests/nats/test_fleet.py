"""Two rtgate nodes on one nats-server (docs/nats.md): cross-node delivery in
both subprotocols, backends (rtgate-pub and raw NATS), resume on another
node, msg_id stored once across nodes, interest, slow consumers and gaps."""
import asyncio
import base64
import time

import msgpack

from conftest import rtgate_pub
from natsraw import RawNats
from rtclient import Client, run


def other(codec):
    return "msgpack" if codec == "json" else "json"


def wait_until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


async def connected(url, codec, **kw):
    c = Client(url, codec, **kw)
    await c.open()
    await c.connect()
    return c


async def publish_n(p, channel, items, **fields):
    seqs = []
    for x in items:
        r = await p.pub(channel, x, **fields)
        assert r["ok"] is True, r
        seqs.append(r.get("seq"))
    return seqs


def test_cross_node_delivery(nats, nodes, codec):
    a, b = nodes(nats.url)

    async def go():
        s = await connected(a.url(), codec, name="sub-on-a")
        p = await connected(b.url(), other(codec), name="pub-on-b")
        try:
            assert (await s.sub("eph.chat"))["ok"] is True
            r = await s.sub("dur.chat")
            assert r["ok"] is True and r["durable"] is True and r["epoch"]
            # A client on B publishes; the client on A gets it.
            r = await p.pub("eph.chat", {"n": 1})
            assert r["ok"] is True and "seq" not in r and r["dup"] is False
            m = await s.next_event(("msg",))
            assert m["channel"] == "eph.chat" and m["data"] == {"n": 1} and "seq" not in m
            r = await p.pub("dur.chat", {"n": 2}, msg_id="c-2")
            m = await s.next_event(("msg",))
            assert (m["channel"], m["seq"], m["msg_id"], m["data"]) == \
                ("dur.chat", r["seq"], "c-2", {"n": 2})
            # A backend publishes with rtgate-pub: JSON, msgpack, binary.
            out = rtgate_pub(nats.url, "dur.chat", '{"n": 3}', msg_id="b-3")
            assert out["dup"] is False
            m = await s.next_event(("msg",))
            assert (m["seq"], m["msg_id"], m["data"]) == (out["seq"], "b-3", {"n": 3})
            rtgate_pub(nats.url, "eph.chat", stdin=msgpack.packb({"n": 4}), encoding="msgpack",
                       ephemeral=True)
            m = await s.next_event(("msg",))
            assert m["channel"] == "eph.chat" and m["data"] == {"n": 4}
            out = rtgate_pub(nats.url, "dur.chat", stdin=b"\x00\x01raw\xff", encoding="binary")
            m = await s.next_event(("msg",))
            assert m["seq"] == out["seq"] and isinstance(m["ts"], int)
            if codec == "json":
                assert base64.b64decode(m["data_b64"]) == b"\x00\x01raw\xff"
            else:
                assert m["data"] == b"\x00\x01raw\xff"
            # The publisher gets its own message back through NATS as well.
            assert (await p.sub("dur.chat"))["ok"] is True
            r = await p.pub("dur.chat", [5])
            got = await p.next_event(("msg",))
            assert got["seq"] == r["seq"] and got["data"] == [5]
            assert (await s.next_event(("msg",)))["seq"] == r["seq"]
        finally:
            await s.close()
            await p.close()
    run(go())


def test_resume_on_other_node(nats, nodes, codec):
    """Disconnect from A, messages published meanwhile (by clients and
    backends, with other channels interleaved: sparse seqs), resume on B."""
    a, b = nodes(nats.url)

    async def go():
        p = await connected(b.url(), "json", name="publisher")
        c = await connected(a.url(), codec, name="first")
        r = await c.sub("dur.resume")
        epoch = r["epoch"]
        first = await publish_n(p, "dur.resume", ["m0", "m1", "m2"])
        got = await c.collect(3)
        assert [m["seq"] for m in got] == first
        await c.close()
        missed = []
        for i in range(3, 23):
            missed += await publish_n(p, "dur.resume", ["m%d" % i])
            await publish_n(p, "dur.noise", [i])
            if i % 5 == 0:
                out = rtgate_pub(nats.url, "dur.resume", '"backend-%d"' % i)
                missed.append(out["seq"])
        c2 = await connected(b.url(), codec, name="resumed", auto_ack=True)
        q = await connected(a.url(), "msgpack", name="live-publisher")
        try:
            r = await c2.sub("dur.resume", since=first[-1], epoch=epoch)
            assert r["ok"] is True and r["recovered"] is True, r
            assert r["epoch"] == epoch and r["seq"] == missed[-1]
            live = await publish_n(q, "dur.resume", ["L0", "L1"])
            got = await c2.collect(len(missed) + 2, timeout=15)
            seqs = [m["seq"] for m in got]
            assert seqs == missed + live
            assert seqs == sorted(set(seqs))
            assert got[-1]["data"] == "L1"
            assert await c2.quiet(0.5) == []
        finally:
            await c2.close()
            await q.close()
            await p.close()
    run(go())


def test_same_msg_id_via_two_nodes_is_stored_once(nats, nodes):
    a, b = nodes(nats.url)

    async def go():
        w = await connected(a.url(), "json", name="watcher")
        pa = await connected(a.url(), "json", name="pub-a")
        pb = await connected(b.url(), "msgpack", name="pub-b")
        try:
            r = await w.sub("dur.once")
            epoch = r["epoch"]
            await w.sub("eph.once")
            r1 = await pa.pub("dur.once", {"v": 1}, msg_id="k1")
            assert r1["ok"] is True and r1["dup"] is False
            # A retry of the same msg_id through the other node: the original answer.
            r2 = await pb.pub("dur.once", {"v": 1}, msg_id="k1")
            assert r2["ok"] is True and r2["dup"] is True and r2["seq"] == r1["seq"]
            out = rtgate_pub(nats.url, "dur.once", '{"v": 1}', msg_id="k1")
            assert out == {"seq": r1["seq"], "dup": True}
            # The id is scoped to its channel.
            r3 = await pb.pub("dur.other", {"v": 1}, msg_id="k1")
            assert r3["dup"] is False and r3["seq"] != r1["seq"]
            # Ephemeral: the same, without seq.
            e1 = await pa.pub("eph.once", "x", msg_id="e1")
            e2 = await pb.pub("eph.once", "x", msg_id="e1")
            assert (e1["dup"], e2["dup"]) == (False, True) and "seq" not in e2
            got = await w.collect(2)
            assert [(m["channel"], m.get("seq")) for m in got] == \
                [("dur.once", r1["seq"]), ("eph.once", None)]
            assert await w.quiet(0.5) == []
            # Stored once: a replay of everything retained has one message.
            c = await connected(b.url(), "json", name="replay")
            r = await c.sub("dur.once", since=0, epoch=epoch)
            assert r["recovered"] is True and r["seq"] == r1["seq"]
            assert [m["seq"] for m in await c.collect(1)] == [r1["seq"]]
            assert await c.quiet(0.3) == []
            await c.close()
        finally:
            await w.close()
            await pa.close()
            await pb.close()
    run(go())


def test_msg_id_scope_is_exact_when_names_hold_colons(nats, nodes):
    """Channel names may hold ':' and so may msg_ids: (channel "dur.a:b",
    msg_id "c") and (channel "dur.a", msg_id "b:c") are two messages. When the
    scoped Nats-Msg-Id was "<channel>:<msg_id>", both were "dur.a:b:c": the
    second got dup:true with the first one's seq (an ok for a message that was
    never stored on its channel)."""
    (a,) = nodes(nats.url, 1)

    async def go():
        w = await connected(a.url(), "json", name="watcher")
        p = await connected(a.url(), "json", name="pub")
        try:
            assert (await w.sub("dur.a"))["ok"] is True
            r1 = await p.pub("dur.a:b", {"v": 1}, msg_id="c")
            assert r1["ok"] is True and r1["dup"] is False
            r2 = await p.pub("dur.a", {"v": 2}, msg_id="b:c")
            assert r2["ok"] is True and r2["dup"] is False, r2
            m = await w.next_event(("msg",))
            assert (m["channel"], m["seq"], m["msg_id"], m["data"]) == \
                ("dur.a", r2["seq"], "b:c", {"v": 2})
            # Retries still find their own message, from clients and from rtgate-pub.
            assert (await p.pub("dur.a", {"v": 2}, msg_id="b:c"))["seq"] == r2["seq"]
            assert rtgate_pub(nats.url, "dur.a", '{"v": 2}', msg_id="b:c") == \
                {"seq": r2["seq"], "dup": True}
            assert rtgate_pub(nats.url, "dur.a:b", '{"v": 1}', msg_id="c") == \
                {"seq": r1["seq"], "dup": True}
        finally:
            await w.close()
            await p.close()
    run(go())


def test_interest_follows_local_subscribers(nats, nodes):
    a, b = nodes(nats.url)

    def subs(g):  # channel interest only (presence, users and the relay of POSTs and polls
        # between nodes have their own subjects: test_transports_fleet)
        return [s for s in nats.subscriptions(g)
                if not s.startswith(("rtgate.geo.", "rtgate.users.", "rtgate.sess"))]

    async def go():
        assert subs(a) == [] and subs(b) == []
        c1 = await connected(a.url(), "json", name="c1")
        c2 = await connected(a.url(), "msgpack", name="c2")
        p = await connected(b.url(), "json", name="p")
        try:
            await c1.sub("eph.i1")
            await c1.sub("dur.i2")
            await c2.sub("eph.i1")
            assert subs(a) == ["rtgate.eph.eph.i1", "rtgate.live.dur.i2"]
            # Publishing without subscribers creates no interest anywhere.
            await publish_n(p, "dur.i3", [1, 2])
            await publish_n(p, "eph.i4", [1])
            assert subs(b) == []
            # A refused subscribe leaves nothing behind.
            r = await c1.sub("dur.i3", since=10**9, epoch="whatever")
            assert r["ok"] is True and r["recovered"] is False
            await c1.unsub("dur.i3")
            r = await c2.sub("dur.i3", since=10**9, epoch=r["epoch"])
            assert r["ok"] is False and r["error"]["code"] == 400
            wait_until(lambda: subs(a) == ["rtgate.eph.eph.i1", "rtgate.live.dur.i2"],
                       what="dur.i3 interest to go")
            # The last local subscriber leaving removes the NATS subscription.
            await c1.unsub("eph.i1")
            assert subs(a) == ["rtgate.eph.eph.i1", "rtgate.live.dur.i2"]
            await c2.close()
            wait_until(lambda: subs(a) == ["rtgate.live.dur.i2"], what="eph.i1 interest to go")
            await c1.close()
            wait_until(lambda: subs(a) == [], what="all interest to go")
        finally:
            await p.close()
    run(go())
    m = a.metrics()
    assert m.get("rtgate_subscriptions", 0) == 0


def test_backend_raw_nats_and_visibility(nats, nodes):
    """Backends with any NATS client: core publish on rtgate.eph.X, core
    publish stored by JetStream on rtgate.dur.X, headers; bad payloads are
    dropped and counted, and a durable channel's next message still arrives.
    Client publishes are visible to backends with their headers."""
    (a,) = nodes(nats.url, 1)
    raw = RawNats(nats.url)

    async def go():
        c = await connected(a.url(), "json", name="c")
        try:
            raw.sub("rtgate.eph.>")
            await c.sub("eph.raw")
            await c.sub("dur.raw")
            raw.pub("rtgate.eph.eph.raw", b'{"a": [1, 2]}', {"Nats-Msg-Id": "be-1"})
            m = await c.next_event(("msg",))
            assert m["data"] == {"a": [1, 2]} and m["msg_id"] == "be-1"
            raw.pub("rtgate.eph.eph.raw", b"{not json")
            raw.pub("rtgate.eph.eph.raw", b"x", {"Rtgate-Encoding": "bogus"})
            raw.pub("rtgate.dur.dur.raw", b"[1,")  # stored by JetStream, dropped by rtgate
            raw.pub("rtgate.dur.dur.raw", b'"ok"', {"Nats-Msg-Id": "be-2"})
            raw.pub("rtgate.eph.eph.raw", b"42")
            raw.flush()
            got = await c.collect(2)
            by = {m["channel"]: m for m in got}
            assert by["dur.raw"]["data"] == "ok" and by["dur.raw"]["msg_id"] == "be-2"
            assert by["dur.raw"]["seq"] >= 2  # the invalid one took a seq
            assert by["eph.raw"]["data"] == 42
            assert await c.quiet(0.3) == []
            # What a backend sees of a client publish.
            await c.pub("eph.raw", {"from": "client"}, msg_id="cm-1")
            subject, headers, payload = None, {}, b""
            while subject != "rtgate.eph.eph.raw" or b"client" not in payload:
                subject, headers, payload = raw.next_msg()
            assert headers["Rtgate-Channel"] == "eph.raw"
            assert headers["Rtgate-Client"] == c.connected["client"]
            assert headers["Rtgate-User"] == c.connected["user"]
            assert headers["Rtgate-Encoding"] == "json"
            assert headers["Rtgate-Msg-Id"] == "cm-1"
        finally:
            await c.close()
            raw.close()
    run(go())
    m = a.metrics()
    if "rtgate_upstream_invalid_total" in m:  # rendered from fo_stats.upstream_invalid
        assert m["rtgate_upstream_invalid_total"] >= 3


def test_slow_subscriber_catches_up_then_gap(nats, nodes):
    """The ack window over NATS: a subscriber that stops acking catches up
    from the cache / JetStream, and gets a gap for what the history lost."""
    a, b = nodes(nats.url, 2, "--max-unacked", "5", "--history", "20")

    async def go():
        s = await connected(a.url(), "json", name="slow")
        p = await connected(b.url(), "json", name="p")
        try:
            await s.sub("dur.slow")
            seqs = await publish_n(p, "dur.slow", list(range(50)))
            got = await s.collect(5)
            assert [m["seq"] for m in got] == seqs[:5]
            assert await s.quiet(0.3) == []
            await s.ack("dur.slow", seqs[4])
            gap = await s.next_event(("gap",))
            assert (gap["from"], gap["to"]) == (seqs[5], seqs[29])
            rest = []
            while len(rest) < 20:
                batch = await s.collect(5)
                rest += batch
                await s.ack("dur.slow", batch[-1]["seq"])
            assert [m["seq"] for m in rest] == seqs[30:]
            assert await s.quiet(0.3) == []
        finally:
            await s.close()
            await p.close()
    run(go())


def test_resume_of_1000_missed_messages(nats, nodes):
    """Resume on a node that holds nothing of the channel: everything comes
    from JetStream. Prints the cost (a number for the docs)."""
    a, b = nodes(nats.url, 2, "--history", "2000", "--max-unacked", "2000")

    async def go():
        p = await connected(a.url(), "msgpack", name="p")
        c = await connected(b.url(), "msgpack", name="c")
        try:
            r = await p.sub("dur.big")
            await p.unsub("dur.big")
            seqs = await publish_n(p, "dur.big", [{"i": i, "pad": "x" * 100} for i in range(1000)])
            t0 = time.monotonic()
            r = await c.sub("dur.big", since=0, epoch=r["epoch"])
            assert r["recovered"] is True
            got = await c.collect(1000, timeout=60)
            dt = time.monotonic() - t0
            assert [m["seq"] for m in got] == seqs
            print("\nresume of 1000 missed messages from JetStream: %.3f s" % dt)
        finally:
            await c.close()
            await p.close()
    run(go(), 120)



def test_lost_live_messages_are_read_back(nats, nodes):
    """Live messages lost between NATS and the node (fault injection:
    RTGATE_NATS_DROP_EVERY drops every 4th one silently) are found through
    Nats-Last-Sequence and read back from JetStream; a lost last message of
    a burst, which nothing reveals, by the probe of a quiet channel."""
    (a,) = nodes(nats.url, 1, env={"RTGATE_NATS_DROP_EVERY": "4"})
    (b,) = nodes(nats.url, 1)

    async def go():
        s = await connected(a.url(), "msgpack", name="sub", auto_ack=True)
        p = await connected(b.url(), "json", name="pub")
        try:
            await s.sub("dur.lossy")
            seqs = []
            for burst in range(3):  # 40 a burst: the last one is always lost
                seqs += await publish_n(p, "dur.lossy", list(range(burst * 40, burst * 40 + 40)))
                t0 = time.monotonic()
                got = await s.collect(40, timeout=10)
                assert [m["seq"] for m in got] == seqs[-40:]
                assert time.monotonic() - t0 < 5, "the quiet probe took too long"
            assert await s.quiet(0.3) == []
        finally:
            await s.close()
            await p.close()
    run(go(), 60)
