"""Limits and hostile input (PROTOCOL.md 5, issue 2): publish rate (429 +
retry_after_ms), garbage frames (400, connection stays usable), oversized
messages (1009), sustained abuse (1008)."""
import asyncio
import json

import msgpack
import pytest

from rtclient import Client, run


EITHER = "either"


async def expect_refusal(c, rid=None, code=400, timeout=5.0, either=False):
    """The answer to a bad frame: a reply with id `rid` when the id is usable,
    else an `error` event (PROTOCOL.md 1 and 5). With either=True both are
    accepted (a frame so broken that the decoder may not reach the id).
    Returns the answer."""
    waiters = [asyncio.ensure_future(c.next_event(("error",), timeout))]
    if rid is not None:
        waiters.append(c.expect_reply(rid))
    done, pending = await asyncio.wait(waiters, timeout=timeout,
                                       return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    if rid is not None:
        c._pending.pop(rid, None)
    assert done, "no answer to a bad frame within %.1f s" % timeout
    ans = done.pop().result()
    if ans["type"] == "reply":
        assert ans["id"] == rid and ans["ok"] is False, ans
    else:
        assert rid is None or either, "expected a reply with id %s, got %r" % (rid, ans)
        assert ans["type"] == "error" and "id" not in ans, ans
    assert ans["error"]["code"] == code, ans
    assert ans["error"]["reason"] == {400: "bad_request", 413: "too_large"}[code], ans
    return ans


async def assert_usable(c):
    await c.ping()
    assert (await c.next_event(("pong",)))["type"] == "pong"
    assert not c.closed.is_set()


def test_publish_flood_429_then_retry_after(gateway, codec):
    g = gateway("--pub-rate", "5", "--pub-burst", "5")

    async def go():
        async with Client(g.url(), codec) as p, Client(g.url(), codec) as s:
            await p.connect()
            await s.connect()
            await s.sub("flood.room")
            reqs = [("pub", {"channel": "flood.room", "data": i}) for i in range(12)]
            replies = await p.requests(reqs)
            # Right away: still limited; after its retry_after_ms: accepted.
            too_soon = await p.pub("flood.room", "too-soon")
            assert too_soon["ok"] is False and too_soon["error"]["code"] == 429, too_soon
            await asyncio.sleep(too_soon["error"]["retry_after_ms"] / 1000.0)
            after = await p.pub("flood.room", "after-wait")
            assert after["ok"] is True, (too_soon, after)
            ok = [r for r in replies if r["ok"]]
            limited = [r for r in replies if not r["ok"]] + [too_soon]
            assert [r["ok"] for r in replies[:5]] == [True] * 5, replies
            assert 5 <= len(ok) <= 6, replies  # one token may refill while sending
            assert len(limited) >= 7
            for r in limited:
                e = r["error"]
                assert e["code"] == 429 and e["reason"] == "rate_limited", r
                assert isinstance(e["retry_after_ms"], int), r
                assert 0 < e["retry_after_ms"] <= 200, r  # one token every 200 ms
            # The refused publishes delivered nothing.
            got = await s.collect(len(ok) + 1)
            assert [m["seq"] for m in got] == [r["seq"] for r in ok] + [after["seq"]]
            assert got[-1]["data"] == "after-wait"
            assert await s.quiet(0.2) == []
            m = g.metrics()
            assert m["rtgate_rate_limited_total"] == len(limited)
            assert m['rtgate_errors_total{code="429",reason="rate_limited"}'] == len(limited)
    run(go())


JSON_GARBAGE = [
    ("not json", None),
    ("{", None),
    ('{"type":"ping"', None),
    ("[1,2,3]", None),
    ('"just a string"', None),
    ("null", None),
    ('{"type":"sub","channel":"a.b"}', None),            # no id
    ('{"type":"sub","id":"7","channel":"a.b"}', None),   # id not an integer
    ('{"type":"sub","id":1.5,"channel":"a.b"}', None),
    ('{"type":"sub","id":101}', 101),                    # no channel
    ('{"type":"pub","id":102,"channel":"a.b"}', 102),    # no data
    ('{"type":"pub","id":103,"channel":"a.b","data":1,"data_b64":"AA=="}', 103),
    ('{"type":"pub","id":104,"channel":"a.b","data_b64":"!!notbase64"}', 104),
    ('{"id":105}', 105),                                 # no type
    ('{"type":42,"id":106}', 106),
    ('{"type":"ack","channel":"a.b","seq":"x"}', None),
    ('{"type":"pub","id":107,"channel":"a.b","data":' + "[" * 200 + "]" * 200 + "}",
     (EITHER, 107)),
]


def rid_of(spec):
    """expect_refusal's keyword arguments from a table entry's id column."""
    if isinstance(spec, tuple):
        return {"rid": spec[1], "either": True}
    return {"rid": spec}


@pytest.mark.parametrize("frame,rid", JSON_GARBAGE, ids=range(len(JSON_GARBAGE)))
def test_json_garbage_400_and_usable(gateway, frame, rid):
    g = gateway()

    async def go():
        async with Client(g.url(), "json") as c:
            await c.connect()
            await c.send_raw(frame)
            await expect_refusal(c, **rid_of(rid))
            await assert_usable(c)
            r = await c.pub("after.garbage", 1)
            assert r["ok"] is True
    run(go(), timeout=30)


def test_json_garbage_all_on_one_connection(gateway):
    """Also before connect, and with a good message after a bad one in the same frame."""
    g = gateway()

    async def go():
        async with Client(g.url(), "json") as c:
            await c.send_raw("garbage")
            await expect_refusal(c)
            await c.connect()
            for frame, rid in JSON_GARBAGE:
                await c.send_raw(frame)
                await expect_refusal(c, **rid_of(rid))
            await assert_usable(c)
            # A good message before a bad one in one frame is still handled.
            fut = c.expect_reply(500)
            await c.send_raw('{"type":"sub","id":500,"channel":"ok.one"}\n{broken')
            assert (await asyncio.wait_for(fut, 5))["ok"] is True
            await expect_refusal(c)
            await assert_usable(c)
    run(go())


def mp(obj):
    return msgpack.packb(obj, use_bin_type=True)


def mp_map_raw(pairs):
    """A msgpack map from already-packed (key, value) byte strings."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


MSGPACK_GARBAGE = [
    (b"\xc1", None),                                      # never-used byte
    (b"\xdd\xff\xff\xff\xff", None),                      # array32 of 4 G elements
    (b"\xdf\xff\xff\xff\xff", None),                      # map32 of 4 G pairs
    (b"\xdb\xff\xff\xff\xff", None),                      # str32 of 4 GB
    (b"\xc6\xff\xff\xff\xff", None),                      # bin32 of 4 GB
    (b"\x81\xa4type\xdd\x7f\xff\xff\xff", None),          # nested huge array
    (mp({"type": "pub", "id": 201, "channel": "a.b", "data": "hello"})[:-3], None),  # truncated
    (mp([1, 2, 3]), None),                                # not a map
    (mp("str"), None),
    (mp({1: 2, "type": "ping"}), None),                   # non-string key
    (mp({"type": "sub", "channel": "a.b"}), None),        # no id
    (mp({"type": "sub", "id": "9", "channel": "a.b"}), None),
    (mp({"type": "sub", "id": 202}), 202),                # no channel
    (mp({"type": "pub", "id": 203, "channel": "a.b"}), 203),
    (mp({"type": b"sub", "id": 204, "channel": "a.b"}), 204),   # bin where str is needed
    (mp_map_raw([(mp("type"), mp("sub")), (mp("id"), mp(205)),
                 (mp("channel"), b"\xa3a\xff\xfe")]), 205),       # invalid UTF-8 str
    (mp_map_raw([(mp("type"), b"\xa3p\xffb")]), None),  # invalid UTF-8 in the type
    (mp({"type": "pub", "id": 206, "channel": "a.b", "data": "x"}) + b"\xc1", None),
    (mp({"type": "pub", "id": 207, "channel": "a.b",
         "data": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}),
     (EITHER, 207)),
    (b"\xde\xff\xff" + b"\xc0" * 10, None),               # map16 claiming 65535 pairs
]


@pytest.mark.parametrize("frame,rid", MSGPACK_GARBAGE, ids=range(len(MSGPACK_GARBAGE)))
def test_msgpack_garbage_400_and_usable(gateway, frame, rid):
    g = gateway()

    async def go():
        async with Client(g.url(), "msgpack") as c:
            await c.connect()
            rss0 = g.rss_kb()
            good = c.expect_reply(206) if frame.endswith(b"\xc1") and len(frame) > 1 else None
            await c.send_raw(frame)
            ans = await expect_refusal(c, **rid_of(rid))
            if good is not None:
                # The good message before the garbage in the same frame was handled.
                assert (await asyncio.wait_for(good, 5))["ok"] is True
            await assert_usable(c)
            r = await c.pub("after.garbage", 1)
            assert r["ok"] is True
            # No allocation bomb.
            assert g.rss_kb() - rss0 < 64 * 1024, (rss0, g.rss_kb())
            return ans
    run(go(), timeout=30)


def test_msgpack_id_found_before_error(gateway):
    """A map whose id is readable gets a reply with that id (PROTOCOL.md 5)."""
    g = gateway()

    async def go():
        async with Client(g.url(), "msgpack") as c:
            await c.connect()
            fut = c.expect_reply(300)
            await c.send_raw(mp({"id": 300, "type": "sub", "channel": "bad..name"}))
            r = await asyncio.wait_for(fut, 5)
            assert r["ok"] is False and r["error"]["code"] == 400
    run(go())


def test_invalid_utf8_text_frame(gateway):
    """Invalid UTF-8 in a text frame. PROTOCOL.md 5: a bad message never
    closes the connection by itself, so it is answered with error 400 and
    the connection stays usable. (RFC 6455 8.1 would fail the connection
    with 1007 instead; the gateway follows PROTOCOL.md, and so does this
    test: lws's UTF-8 validation does not close it either.)"""
    g = gateway()

    async def go():
        async with Client(g.url(), "json") as c:
            await c.connect()
            await c.send_text_bytes(b'{"type":"ping","x":"\xff\xfe"}')
            await expect_refusal(c)
            await c.send_text_bytes(b'{"type":"pub","id":9,"channel":"u.t","data":"\xc3\x28"}')
            await expect_refusal(c, rid=9, either=True)
            await assert_usable(c)
            r = await c.pub("u.t", "\u00e9t\u00e9")
            assert r["ok"] is True
    run(go())


def test_invalid_utf8_inside_msgpack_and_binary_json(gateway):
    """Invalid UTF-8 where the WebSocket layer does not look (a msgpack str in a
    binary frame): 400, connection usable."""
    g = gateway()

    async def go():
        async with Client(g.url(), "msgpack") as c:
            await c.connect()
            frame = mp_map_raw([(mp("type"), mp("pub")), (mp("id"), mp(5)),
                                (mp("channel"), mp("u.t")), (mp("data"), b"\xa2\xc3\x28")])
            await c.send_raw(frame)
            await expect_refusal(c, 5)
            await assert_usable(c)
    run(go())


def padded_pub(codec, target_len):
    """A pub message whose encoding is exactly target_len bytes."""
    base = {"type": "pub", "id": 77, "channel": "big.room", "data": ""}
    enc = (lambda o: json.dumps(o, separators=(",", ":")).encode()) if codec == "json" else mp
    n = target_len - len(enc(base))
    while n >= 0:
        base["data"] = "x" * n
        b = enc(base)
        if len(b) == target_len:
            return b
        n -= 1
    raise AssertionError("cannot pad to %d" % target_len)


def send_frame(c, codec, b):
    return c.send_raw(b.decode() if codec == "json" else b)


def test_message_at_limit_ok_over_limit_1009(gateway, codec):
    g = gateway("--max-message-bytes", "1024")

    async def go():
        async with Client(g.url(), codec) as c:
            await c.connect()
            fut = c.expect_reply(77)
            await send_frame(c, codec, padded_pub(codec, 1024))
            r = await asyncio.wait_for(fut, 5)
            assert r["ok"] is True, r
            c.expect_reply(77)
            await send_frame(c, codec, padded_pub(codec, 1025))
            d = await c.expect_disconnect(1009)
            assert d["reason"] and isinstance(d["reconnect"], bool) and "after_ms" in d, d
            # No reply to the oversized message: only the disconnect came after the first reply.
            assert [m["type"] for m in c.all][-2:] == ["reply", "disconnect"], c.all
            c._pending.clear()
        assert g.metrics()["rtgate_closes_too_big_total"] == 1
    run(go())


def test_fragmented_message_reassembly_and_limit(gateway, codec):
    g = gateway("--max-message-bytes", "4096")

    async def go():
        async with Client(g.url(), codec) as c:
            await c.connect()
            await c.sub("big.room")
            ok = padded_pub(codec, 3000)
            fut = c.expect_reply(77)
            parts = [ok[i:i + 700] for i in range(0, len(ok), 700)]
            if codec == "json":
                await c.ws.send([p.decode() for p in parts])
            else:
                await c.ws.send(parts)
            r = await asyncio.wait_for(fut, 5)
            assert r["ok"] is True, r
            m = await c.next_event(("msg",))
            assert len(m["data"]) == len(json.loads(ok)["data"] if codec == "json"
                                         else msgpack.unpackb(ok)["data"])
            # Over the limit in fragments that are each small.
            big = padded_pub(codec, 6000)
            parts = [big[i:i + 700] for i in range(0, len(big), 700)]
            c.expect_reply(77)
            try:
                if codec == "json":
                    await c.ws.send([p.decode() for p in parts])
                else:
                    await c.ws.send(parts)
            except Exception:
                pass  # the server may close before the last fragment
            await c.expect_disconnect(1009)
            c._pending.clear()
    run(go())


async def abuse_until_limit(bad, limit):
    for _ in range(limit):
        r = await bad.request("sub", channel="bad..channel")
        assert r["error"]["code"] == 400
    await assert_usable(bad)  # `limit` refusals: not over the limit yet


def test_sustained_abuse_closes_1008(gateway, codec):
    g = gateway("--abuse-limit", "20")

    async def go():
        async with Client(g.url(), codec) as bad, Client(g.url(), codec) as good:
            await bad.connect()
            await good.connect()
            await abuse_until_limit(bad, 20)
            # One more refusal: answered, then disconnect, then close 1008.
            fut = bad.expect_reply(1000)
            await bad.send({"type": "sub", "id": 1000, "channel": "bad..channel"})
            d = await bad.expect_disconnect(1008)
            r = await asyncio.wait_for(fut, 1)
            assert r["error"]["code"] == 400
            assert d["reason"], d
            assert isinstance(d["reconnect"], bool) and d["after_ms"] == 60000, d
            await assert_usable(good)
            assert g.metrics()["rtgate_closes_policy_total"] == 1
    run(go())


def test_abuser_that_keeps_sending_still_gets_disconnect_and_1008(gateway, codec):
    """The abusive client does not stop to listen: the server must still get
    the disconnect and the close frame to it (a graceful close: no TCP reset
    that destroys them while the client's messages are in flight)."""
    g = gateway("--abuse-limit", "20", "--abuse-block-ms", "1234")

    async def go():
        async with Client(g.url(), codec) as bad:
            await bad.connect()
            await abuse_until_limit(bad, 20)
            for i in range(30):
                bad.expect_reply(1000 + i)
                try:
                    await bad.send({"type": "sub", "id": 1000 + i, "channel": "bad..channel"})
                except Exception:
                    break
            d = await bad.expect_disconnect(1008)
            assert d["after_ms"] == 1234, d
            bad._pending.clear()
    run(go())
