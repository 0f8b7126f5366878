"""Durable channels (PROTOCOL.md 3): resume with since/epoch, stale epoch,
fail-closed since, idempotent publish, the ack window, gap; over every
transport: WebSocket (JSON, msgpack), Server-Sent Events and long-polling
(httpclient.py speaks the same request/reply interface)."""
import asyncio

import pytest

from httpclient import Client
from rtclient import run


@pytest.fixture(params=["json", "msgpack", "sse", "longpoll"])
def codec(request):
    """The transport (and for WebSocket the subprotocol) every client of a test uses."""
    return request.param


async def publish_n(p, channel, items, **fields):
    seqs = []
    for x in items:
        r = await p.pub(channel, x, **fields)
        assert r["ok"] is True, r
        seqs.append(r.get("seq"))
    return seqs


def test_resume_after_disconnect(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as p:
            await p.connect()
            a = Client(g.url(), codec, name="a")
            await a.open()
            await a.connect()
            r = await a.sub("res.room")
            epoch = r["epoch"]
            assert r["ok"] and r["durable"] and "recovered" not in r
            first = await publish_n(p, "res.room", ["m0", "m1", "m2"])
            got = await a.collect(3)
            assert [m["seq"] for m in got] == first
            last = got[-1]["seq"]
            await a.close()
            # Published while a is away.
            missed = await publish_n(p, "res.room", ["m%d" % i for i in range(3, 10)])
            b = Client(g.url(), codec, name="b")
            await b.open()
            try:
                await b.connect()
                r = await b.sub("res.room", since=last, epoch=epoch)
                assert r["ok"] is True and r["recovered"] is True, r
                assert r["epoch"] == epoch and r["seq"] == missed[-1]
                # Live messages right behind the subscribe: no gap, no dup at the seam.
                live = await publish_n(p, "res.room", ["m10", "m11"])
                got = await b.collect(len(missed) + 2)
                assert [m["seq"] for m in got] == missed + live
                assert [m["data"] for m in got] == ["m%d" % i for i in range(3, 12)]
                assert await b.quiet(0.3) == []
                # The reply came before the replay.
                kinds = [m["type"] for m in b.all if m["type"] in ("reply", "msg")]
                assert kinds[:2] == ["reply", "msg"]
            finally:
                await b.close()
    run(go())


def test_resume_with_nothing_missed(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as b:
            await p.connect()
            await b.connect()
            seqs = await publish_n(p, "res.none", [1, 2])
            r = await p.sub("res.none")
            r = await b.sub("res.none", since=seqs[-1], epoch=r["epoch"])
            assert r["ok"] is True and r["recovered"] is True and r["seq"] == seqs[-1]
            assert await b.quiet(0.3) == []
            # since=0 replays everything retained.
            await b.unsub("res.none")
            r = await b.sub("res.none", since=0, epoch=r["epoch"])
            assert r["recovered"] is True
            assert [m["seq"] for m in await b.collect(2)] == seqs
    run(go())


def test_stale_or_missing_epoch_not_recovered(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as b:
            await p.connect()
            await b.connect()
            seqs = await publish_n(p, "ep.room", ["a", "b", "c"])
            for extra in ({"epoch": "not-the-epoch"}, {}):
                r = await b.sub("ep.room", since=seqs[0], **extra)
                assert r["ok"] is True and r["recovered"] is False, (extra, r)
                assert r["seq"] == seqs[-1]
                assert await b.quiet(0.4) == []  # nothing replayed
                # Live delivery continues.
                s = await publish_n(p, "ep.room", ["live"])
                m = await b.next_event(("msg",))
                assert m["seq"] == s[0] and m["data"] == "live"
                seqs += s
                assert (await b.unsub("ep.room"))["ok"]
    run(go())


def test_since_fails_closed(gateway, codec):
    g = gateway("--ephemeral", "eph.>")

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as b:
            await p.connect()
            await b.connect()
            seqs = await publish_n(p, "fc.room", ["a", "b"])
            epoch = (await p.sub("fc.room"))["epoch"]
            bad = [
                {"since": seqs[-1] + 1, "epoch": epoch},   # above the latest
                {"since": seqs[-1] + 1000, "epoch": epoch},
                {"since": -1, "epoch": epoch},             # malformed
                {"since": "1", "epoch": epoch},
                {"since": 1.5, "epoch": epoch},
                {"since": 1, "epoch": ""},
                {"since": 1, "epoch": "e" * 65},
                {"since": 1, "epoch": 7},
            ]
            for f in bad:
                r = await b.sub("fc.room", **f)
                assert r["ok"] is False and r["error"]["code"] == 400, (f, r)
            # since on an ephemeral channel
            r = await b.sub("eph.x", since=0)
            assert r["ok"] is False and r["error"]["code"] == 400, r
            r = await b.sub("eph.x", since=0, epoch=epoch)
            assert r["ok"] is False and r["error"]["code"] == 400, r
            assert await b.quiet(0.3) == []  # nothing replayed by any of them
            # None of these subscribed: publishing delivers nothing to b.
            await publish_n(p, "fc.room", ["c"])
            await publish_n(p, "eph.x", ["d"])
            assert await b.quiet(0.3) == []
            # A proper one still works afterwards.
            r = await b.sub("fc.room", since=seqs[-1], epoch=epoch)
            assert r["ok"] is True and r["recovered"] is True
            assert [m["data"] for m in await b.collect(1)] == ["c"]
    run(go())


def test_idempotent_retry(gateway, codec):
    g = gateway("--ephemeral", "eph.>")

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as p2, \
                Client(g.url(), codec) as s:
            for c in (p, p2, s):
                await c.connect()
            await s.sub("idem.room")
            await s.sub("eph.idem")
            r1 = await p.pub("idem.room", {"v": 1}, msg_id="m-1")
            assert r1["ok"] is True and r1["dup"] is False
            r2 = await p.pub("idem.room", {"v": 1}, msg_id="m-1")
            assert r2["ok"] is True and r2["dup"] is True and r2["seq"] == r1["seq"]
            # From another connection too, even with other data.
            r3 = await p2.pub("idem.room", {"v": 2}, msg_id="m-1")
            assert r3["dup"] is True and r3["seq"] == r1["seq"]
            # Same msg_id on another channel is another message.
            r4 = await p.pub("idem.other", {"v": 1}, msg_id="m-1")
            assert r4["dup"] is False
            r5 = await p.pub("idem.room", {"v": 3}, msg_id="m-2")
            assert r5["dup"] is False and r5["seq"] > r1["seq"]
            # Ephemeral: same dedup, no seq.
            e1 = await p.pub("eph.idem", "e", msg_id="m-1")
            e2 = await p.pub("eph.idem", "e", msg_id="m-1")
            assert e1["dup"] is False and e2["dup"] is True and "seq" not in e2
            await p.pub("eph.idem", "sentinel")
            got = await s.collect(4)
            assert [(m["channel"], m.get("seq"), m.get("msg_id"), m["data"]) for m in got] == [
                ("idem.room", r1["seq"], "m-1", {"v": 1}),
                ("idem.room", r5["seq"], "m-2", {"v": 3}),
                ("eph.idem", None, "m-1", "e"),
                ("eph.idem", None, None, "sentinel"),
            ]
            assert await s.quiet(0.3) == []
            m = g.metrics()
            assert m["rtgate_dups_total"] == 3
            # Bad msg_ids.
            for bad in ("", "x" * 65, 5):
                r = await p.pub("idem.room", 1, msg_id=bad)
                assert r["ok"] is False and r["error"]["code"] == 400, (bad, r)
    run(go())


def test_ack_window_stalls_and_releases(gateway, codec):
    g = gateway("--max-unacked", "5", "--ephemeral", "eph.>")
    ch = "win.room"

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as s:
            await p.connect()
            await s.connect()
            assert (await s.sub(ch))["ok"]
            assert (await s.sub("eph.side"))["ok"]
            seqs = await publish_n(p, ch, list(range(12)))
            first = await s.collect(5)
            assert [m["seq"] for m in first] == seqs[:5]
            assert await s.quiet(0.5) == []  # window full: nothing more
            # Replies, pongs and ephemeral messages still flow.
            await s.ping()
            assert (await s.next_event(("pong",)))["type"] == "pong"
            await p.pub("eph.side", "side")
            m = await s.next_event(("msg",))
            assert m["channel"] == "eph.side" and m["data"] == "side"
            assert (await s.sub("win.other"))["ok"] is True
            # A partial ack opens the window by that much.
            await s.ack(ch, seqs[1])
            nxt = await s.collect(2)
            assert [m["seq"] for m in nxt] == seqs[5:7]
            assert await s.quiet(0.4) == []
            await s.ack(ch, seqs[6])
            nxt2 = await s.collect(5)
            assert [m["seq"] for m in nxt2] == seqs[7:12]
            # Live after catch-up, still windowed: 5 unacked now.
            more = await publish_n(p, ch, ["late"])
            assert await s.quiet(0.4) == []
            await s.ack(ch, seqs[11])
            late = await s.collect(1)
            assert late[0]["seq"] == more[0] and late[0]["data"] == "late"
            # A stale (lower) ack changes nothing and is not answered.
            await s.ack(ch, seqs[0])
            assert await s.quiet(0.3, types=("msg", "gap", "error")) == []
            allseq = [m["seq"] for m in first + nxt + nxt2 + late]
            assert allseq == seqs + more
    run(go())


def test_gap_for_paused_subscriber(gateway, codec):
    g = gateway("--history", "5", "--max-unacked", "3")
    ch = "gap.room"

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as s:
            await p.connect()
            await s.connect()
            await s.sub(ch)
            seqs = await publish_n(p, ch, list(range(20)))
            got = await s.collect(3)
            assert [m["seq"] for m in got] == seqs[:3]
            assert await s.quiet(0.3) == []
            await s.ack(ch, seqs[2])
            gap = await s.next_event(("gap", "msg"))
            assert gap["type"] == "gap", gap
            assert gap["channel"] == ch
            # The history keeps the last 5 (seqs[15:]): seqs[3..14] are lost.
            assert seqs[2] < gap["from"] <= seqs[3], (gap, seqs)
            assert seqs[14] <= gap["to"] < seqs[15], (gap, seqs)
            if seqs == list(range(seqs[0], seqs[0] + 20)):
                assert (gap["from"], gap["to"]) == (seqs[3], seqs[14])
            rest = await s.collect(3)
            assert [m["seq"] for m in rest] == seqs[15:18]
            await s.ack(ch, seqs[17])
            rest2 = await s.collect(2)
            assert [m["seq"] for m in rest2] == seqs[18:20]
            assert await s.quiet(0.3) == []
            assert g.metrics()["rtgate_gaps_total"] == 1
    run(go())


def test_resume_beyond_history_not_recovered(gateway, codec):
    g = gateway("--history", "5")

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as s:
            await p.connect()
            await s.connect()
            seqs = await publish_n(p, "old.room", list(range(12)))
            epoch = (await p.sub("old.room"))["epoch"]
            # History holds seqs[7:]; seqs[6] is lost.
            for since in (seqs[2], seqs[5]):
                r = await s.sub("old.room", since=since, epoch=epoch)
                assert r["ok"] is True and r["recovered"] is False, (since, r)
                assert await s.quiet(0.4) == []
                await s.unsub("old.room")
            # Exactly at the edge of the history: recovered, exactly the rest.
            r = await s.sub("old.room", since=seqs[6], epoch=epoch)
            assert r["recovered"] is True, r
            assert [m["seq"] for m in await s.collect(5)] == seqs[7:]
            assert await s.quiet(0.3) == []
    run(go())


def test_ack_beyond_delivered_does_not_skip_or_duplicate(gateway, codec):
    """An ack for a seq not delivered yet (or far beyond the latest) must not
    corrupt the window: later deliveries stay in order, exactly once."""
    g = gateway("--max-unacked", "3")
    ch = "ackahead.room"

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as s:
            await p.connect()
            await s.connect()
            await s.sub(ch)
            seqs = await publish_n(p, ch, list(range(6)))
            got = await s.collect(3)
            assert [m["seq"] for m in got] == seqs[:3]
            await s.ack(ch, 10 ** 12)        # far beyond anything published
            rest = await s.collect(3)
            assert [m["seq"] for m in rest] == seqs[3:]
            await s.ack(ch, 10 ** 12)
            more = await publish_n(p, ch, list(range(6, 13)))
            # The window still holds: at most 3 unacked after these.
            got2 = await s.collect(3)
            assert [m["seq"] for m in got2] == more[:3]
            assert await s.quiet(0.4) == []
            await s.ack(ch, more[2])
            got3 = await s.collect(3)
            assert [m["seq"] for m in got3] == more[3:6]
            await s.ack(ch, more[5])
            assert [m["seq"] for m in await s.collect(1)] == more[6:]
            assert await s.quiet(0.3) == []
            # Acks on channels not subscribed, or ephemeral, are ignored.
            await s.ack("not.subscribed", 5)
            await s.ping()
            assert (await s.next_event())["type"] == "pong"
    run(go())


def test_epoch_changes_when_history_is_lost(gateway, codec):
    """A restarted (memory engine) gateway has lost the history: its epoch
    differs, and a resume with the old epoch is not recovered."""
    g1 = gateway()

    async def pub_and_epoch(g):
        async with Client(g.url(), codec) as p:
            await p.connect()
            seqs = await publish_n(p, "ep.restart", ["a", "b", "c"])
            r = await p.sub("ep.restart")
            return seqs, r["epoch"]

    seqs1, epoch1 = run(pub_and_epoch(g1))
    g1.sigterm()
    assert g1.wait_exit(10) == 0
    g2 = gateway()
    seqs2, epoch2 = run(pub_and_epoch(g2))
    assert epoch1 != epoch2

    async def resume():
        async with Client(g2.url(), codec) as s:
            await s.connect()
            r = await s.sub("ep.restart", since=seqs1[0], epoch=epoch1)
            assert r["ok"] is True and r["recovered"] is False, r
            assert r["epoch"] == epoch2
            assert await s.quiet(0.4) == []
    run(resume())


def test_dedup_window_and_history_age_expire(gateway, codec):
    g = gateway("--dedup-window-ms", "600", "--history-age-ms", "600")

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as s:
            await p.connect()
            await s.connect()
            r1 = await p.pub("age.room", "x", msg_id="once")
            epoch = (await p.sub("age.room"))["epoch"]
            r2 = await p.pub("age.room", "x", msg_id="once")
            assert r2["dup"] is True and r2["seq"] == r1["seq"]
            # Within the age: a resume replays it.
            r = await s.sub("age.room", since=0, epoch=epoch)
            assert r["recovered"] is True
            assert [m["seq"] for m in await s.collect(1)] == [r1["seq"]]
            await s.unsub("age.room")
            await asyncio.sleep(1.5)
            # Past the dedup window: the same msg_id is a new message.
            r3 = await p.pub("age.room", "x", msg_id="once")
            assert r3["dup"] is False and r3["seq"] > r1["seq"], r3
            # Past the history age: r1 is gone, a resume from before it is not recovered.
            r = await s.sub("age.room", since=0, epoch=epoch)
            assert r["recovered"] is False, r
            assert await s.quiet(0.4) == []
    run(go())


def test_ack_window_is_per_connection_across_channels(gateway, codec):
    g = gateway("--max-unacked", "5")

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as s:
            await p.connect()
            await s.connect()
            r = await s.sub("wa.one", epoch="ignored-without-since")
            assert "recovered" not in r  # only when since was sent
            await s.sub("wa.two")
            a = await publish_n(p, "wa.one", [0, 1, 2, 3])
            b = await publish_n(p, "wa.two", [0, 1, 2, 3])
            got = await s.collect(5)
            assert await s.quiet(0.4) == []  # 5 unacked on this connection in all
            per = {"wa.one": [], "wa.two": []}
            for m in got:
                per[m["channel"]].append(m["seq"])
            assert per["wa.one"] == a[:len(per["wa.one"])]
            assert per["wa.two"] == b[:len(per["wa.two"])]
            for ch, seqs in per.items():
                if seqs:
                    await s.ack(ch, seqs[-1])
            rest = await s.collect(3)
            for m in rest:
                per[m["channel"]].append(m["seq"])
            assert per == {"wa.one": a, "wa.two": b}
            assert await s.quiet(0.3) == []
    run(go())
