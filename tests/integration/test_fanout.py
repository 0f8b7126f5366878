"""Fan-out (PROTOCOL.md 3): many subscribers, unsub, ephemeral channels,
payloads across the two subprotocols."""
import asyncio
import base64
import time

from rtclient import Client, b64, run

N_CLIENTS = 100
N_MSGS = 20


def test_fanout_to_100_clients(gateway, codec):
    g = gateway()

    async def go():
        subs = [Client(g.url(), codec, name="s%d" % i) for i in range(N_CLIENTS)]
        pub = Client(g.url(), codec, name="pub")
        try:
            await asyncio.gather(*(c.open() for c in subs + [pub]))
            await asyncio.gather(*(c.connect() for c in subs + [pub]))
            replies = await asyncio.gather(*(c.sub("fan.room") for c in subs))
            assert all(r["ok"] and r["durable"] for r in replies)
            seqs = []
            for i in range(N_MSGS):
                r = await pub.pub("fan.room", {"i": i, "pad": "x" * 50})
                assert r["ok"] is True and r["dup"] is False
                seqs.append(r["seq"])
            assert seqs == sorted(seqs) and len(set(seqs)) == N_MSGS
            got = await asyncio.gather(*(c.collect(N_MSGS, timeout=20) for c in subs))
            for c, msgs in zip(subs, got):
                assert [m["data"]["i"] for m in msgs] == list(range(N_MSGS)), c.name
                assert [m["seq"] for m in msgs] == seqs, c.name
                assert all(m["channel"] == "fan.room" and isinstance(m["ts"], int)
                           for m in msgs)
            # Exactly once: nothing more arrives.
            extra = await asyncio.gather(*(c.quiet(0.3) for c in subs))
            assert all(e == [] for e in extra)
            assert pub.drain_events() == []  # the publisher is not subscribed
            m = g.metrics()
            assert m["rtgate_connections"] == N_CLIENTS + 1
            assert m["rtgate_subscriptions"] == N_CLIENTS
            assert m["rtgate_deliveries_total"] >= N_CLIENTS * N_MSGS
        finally:
            await asyncio.gather(*(c.close() for c in subs + [pub]), return_exceptions=True)
        for c in subs + [pub]:
            assert not c.violations, (c.name, c.violations)
    run(go(), timeout=90)


def test_unsub_stops_delivery(gateway, codec):
    g = gateway("--ephemeral", "eph.>")

    async def go():
        for ch in ("un.durable", "eph.un"):
            async with Client(g.url(), codec) as a, Client(g.url(), codec) as b, \
                    Client(g.url(), codec) as p:
                for c in (a, b, p):
                    await c.connect()
                assert (await a.sub(ch))["ok"] and (await b.sub(ch))["ok"]
                await p.pub(ch, "one")
                assert (await a.next_event(("msg",)))["data"] == "one"
                assert (await b.next_event(("msg",)))["data"] == "one"
                r = await a.unsub(ch)
                assert r == {"type": "reply", "id": r["id"], "ok": True}
                await p.pub(ch, "two")
                await p.pub(ch, "three")
                assert [m["data"] for m in await b.collect(2)] == ["two", "three"]
                assert await a.quiet(0.3) == []
                # Unsubscribing again: not subscribed.
                r = await a.unsub(ch)
                assert r["ok"] is False and r["error"]["code"] == 404
                # And subscribing again works.
                assert (await a.sub(ch))["ok"] is True
    run(go())


def test_ephemeral_channel_has_no_seq(gateway, codec):
    g = gateway("--ephemeral", "eph.>")

    async def go():
        async with Client(g.url(), codec) as s, Client(g.url(), codec) as p:
            await s.connect()
            await p.connect()
            r = await s.sub("eph.live")
            assert r["ok"] is True and r["durable"] is False
            assert "seq" not in r and "epoch" not in r and "recovered" not in r
            r = await p.pub("eph.live", {"k": 1}, msg_id="e-1")
            assert r["ok"] is True and r["dup"] is False and "seq" not in r
            m = await s.next_event(("msg",))
            assert m["data"] == {"k": 1} and m["msg_id"] == "e-1" and "seq" not in m
            # A durable channel next to it has a seq.
            r = await s.sub("dur.live")
            assert r["durable"] is True and isinstance(r["seq"], int) and r["epoch"]
    run(go())


def test_publisher_receives_own_message(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as c:
            await c.connect()
            await c.sub("self.echo")
            r = await c.pub("self.echo", [1, 2, 3])
            m = await c.next_event(("msg",))
            assert m["data"] == [1, 2, 3] and m["seq"] == r["seq"]
            assert "msg_id" not in m  # no msg_id given
            assert isinstance(m["ts"], int) and abs(m["ts"] - time.time() * 1000) < 5000, m
    run(go())


def test_payloads_cross_subprotocols(gateway):
    """A msgpack bin reaches JSON clients as data_b64; data_b64 from a JSON
    client reaches msgpack clients as bin; structured data is the same value."""
    g = gateway()
    blob = bytes(range(256))

    async def go():
        async with Client(g.url(), "json") as j, Client(g.url(), "msgpack") as m:
            await j.connect()
            await m.connect()
            await j.sub("x.codec")
            await m.sub("x.codec")
            value = {"s": "h\u00e9llo \u2603", "n": -5, "f": 1.5, "l": [True, None, {"a": 1}]}
            await m.pub("x.codec", value)
            await m.pub("x.codec", blob)
            r = await j.request("pub", channel="x.codec", data_b64=b64(blob[::-1]))
            assert r["ok"] is True, r
            jm = await j.collect(3)
            mm = await m.collect(3)
            assert jm[0]["data"] == value and mm[0]["data"] == value
            assert "data" not in jm[1] and base64.b64decode(jm[1]["data_b64"]) == blob
            assert mm[1]["data"] == blob and isinstance(mm[1]["data"], bytes)
            assert base64.b64decode(jm[2]["data_b64"]) == blob[::-1]
            assert mm[2]["data"] == blob[::-1]
            # A pub without data is refused.
            r = await j.request("pub", channel="x.codec")
            assert r["ok"] is False and r["error"]["code"] == 400
            r = await m.request("pub", channel="x.codec")
            assert r["ok"] is False and r["error"]["code"] == 400
    run(go())


def test_bad_channel_names_400(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as c:
            await c.connect()
            for ch in ["", "a..b", ".a", "a.", "sp ace", "x" * 129, "a.*", "a.>", "\u00e9t\u00e9"]:
                r = await c.sub(ch)
                assert r["ok"] is False and r["error"]["code"] == 400, (ch, r)
                r = await c.pub(ch, 1)
                assert r["ok"] is False and r["error"]["code"] == 400, (ch, r)
            assert (await c.sub("x" * 128))["ok"] is True
            assert (await c.sub("A-z_0:9.b-c"))["ok"] is True
    run(go())


def test_second_sub_409_and_max_subs_403(gateway, codec):
    g = gateway("--max-subs", "3")

    async def go():
        async with Client(g.url(), codec) as c:
            await c.connect()
            assert (await c.sub("ms.a"))["ok"] is True
            r = await c.sub("ms.a")
            assert r["ok"] is False and r["error"]["code"] == 409
            assert (await c.sub("ms.b"))["ok"] is True
            assert (await c.sub("ms.c"))["ok"] is True
            r = await c.sub("ms.d")
            assert r["ok"] is False and r["error"]["code"] == 403
            assert (await c.unsub("ms.a"))["ok"] is True
            assert (await c.sub("ms.d"))["ok"] is True
    run(go())


VALUES = [None, False, True, 0, -1, "", [], {}, 2 ** 63 - 1, -2 ** 63, 0.1, 1e308, "\u0000a",
          "\U0001F600 \u00e9", {"nested": [{"a": [None, 1.5, "x"]}]}]


def test_data_values_round_trip_both_ways(gateway):
    """`data` is any JSON value / msgpack object: each arrives unchanged in
    both subprotocols, whichever one published it (PROTOCOL.md 1)."""
    g = gateway("--pub-rate", "1000", "--pub-burst", "1000")

    async def go():
        async with Client(g.url(), "json") as j, Client(g.url(), "msgpack") as m:
            await j.connect()
            await m.connect()
            await j.sub("val.room")
            await m.sub("val.room")
            for pubr in (j, m):
                for v in VALUES:
                    r = await pubr.pub("val.room", v)
                    assert r["ok"] is True, (pubr.wire, v, r)
                jm = await j.collect(len(VALUES))
                mm = await m.collect(len(VALUES))
                for v, a, b in zip(VALUES, jm, mm):
                    assert "data" in a and "data" in b, (v, a, b)
                    assert a["data"] == v and b["data"] == v, (pubr.wire, v, a, b)
                    assert type(a["data"]) is type(v) and type(b["data"]) is type(v), v
            # msgpack-only values: uint64 reaches JSON as the same integer.
            r = await m.pub("val.room", 2 ** 64 - 1)
            assert r["ok"] is True
            assert (await j.next_event(("msg",)))["data"] == 2 ** 64 - 1
            assert (await m.next_event(("msg",)))["data"] == 2 ** 64 - 1
    run(go())


def test_msgpack_values_without_json_form_are_refused(gateway):
    """A msgpack payload a JSON subscriber could not receive (ext types,
    non-string map keys) is refused at publish with 400 instead of being
    silently skipped for JSON subscribers."""
    import msgpack
    g = gateway()

    async def go():
        async with Client(g.url(), "msgpack") as m, Client(g.url(), "json") as j:
            await m.connect()
            await j.connect()
            await j.sub("noform.room")
            for v in (msgpack.ExtType(5, b"xx"), {1: 2}, {"a": {b"k": 1}}):
                r = await m.pub("noform.room", v)
                assert r["ok"] is False and r["error"]["code"] == 400, (v, r)
            assert await j.quiet(0.3) == []
    run(go())
