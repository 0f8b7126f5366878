"""The session (PROTOCOL.md 2): connect first, 401 before it, pong before it,
close 4001 after connect_timeout_ms, pipelining, several messages per frame."""
import asyncio
import json
import time

import msgpack

from rtclient import Client, run


def test_connect_reply_fields(gateway, codec):
    g = gateway("--pub-rate", "7", "--pub-burst", "9", "--max-unacked", "33", "--max-subs", "11",
                "--max-message-bytes", "4096")

    async def go():
        async with Client(g.url(), codec) as c:
            r = await c.connect(name="tester")
            assert r["type"] == "connected" and r["id"] == 1
            assert isinstance(r["client"], str) and r["client"]
            assert isinstance(r["user"], str) and r["user"]
            assert r["node"] == g.node_id
            assert r["heartbeat_ms"] == 25000
            assert r["limits"] == {"pub_rate": 7, "pub_burst": 9, "max_message_bytes": 4096,
                                   "max_subs": 11, "max_unacked": 33}
            async with Client(g.url(), codec) as c2:
                r2 = await c2.connect()
                assert r2["client"] != r["client"]
    run(go())


def test_401_before_connect_and_pong(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as c:
            for t, f in [("sub", {"channel": "a.b"}), ("pub", {"channel": "a.b", "data": 1}),
                         ("unsub", {"channel": "a.b"})]:
                r = await c.request(t, **f)
                assert r["ok"] is False and r["error"]["code"] == 401, r
                assert r["error"]["reason"] == "unauthorized"
            await c.ack("a.b", 1)  # no id: ignored, not answered
            await c.ping()
            assert (await c.next_event())["type"] == "pong"  # nothing came before the pong
            await c.connect()
            r = await c.sub("a.b")
            assert r["ok"] is True
            assert c.drain_events() == []
    run(go())


def test_connect_timeout_closes_4001(gateway, codec):
    g = gateway("--connect-timeout-ms", "500")

    async def go():
        async with Client(g.url(), codec) as idle, Client(g.url(), codec) as ok:
            t0 = time.monotonic()
            await ok.connect()
            d = await idle.expect_disconnect(4001)
            elapsed = time.monotonic() - t0
            assert d["reason"], d
            assert 0.4 <= elapsed <= 3.0, elapsed
            # The one that sent connect in time stays open.
            await asyncio.sleep(0.3)
            assert not ok.closed.is_set()
            await ok.ping()
            await ok.next_event(("pong",))
        assert g.metrics()["rtgate_closes_connect_timeout_total"] == 1
    run(go())


def test_pipelined_requests_answered_in_order(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as c:
            # connect, sub and pub sent back to back without waiting.
            replies = await c.requests([
                ("connect", {}),
                ("sub", {"channel": "pipe.x"}),
                ("pub", {"channel": "pipe.x", "data": {"n": 1}}),
            ])
            assert replies[0]["type"] == "connected"
            assert replies[1]["ok"] is True and replies[1]["durable"] is True
            assert replies[2]["ok"] is True
            m = await c.next_event(("msg",))
            assert m["data"] == {"n": 1} and m["seq"] == replies[2]["seq"]
            # Order of arrival equals order of the requests.
            ids = [x["id"] for x in c.all if x["type"] in ("connected", "reply")]
            assert ids == [1, 2, 3]
    run(go())


def test_several_messages_in_one_frame(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as c:
            msgs = [{"type": "connect", "id": 1}, {"type": "sub", "id": 2, "channel": "multi.a"},
                    {"type": "ping"}, {"type": "pub", "id": 3, "channel": "multi.a", "data": "x"}]
            futs = [c.expect_reply(i) for i in (1, 2, 3)]
            if codec == "json":
                # Back to back, with and without whitespace between them.
                frame = (json.dumps(msgs[0]) + json.dumps(msgs[1]) + " \n" + json.dumps(msgs[2])
                         + "\r\n\t" + json.dumps(msgs[3]))
            else:
                frame = b"".join(msgpack.packb(m) for m in msgs)
            await c.send_raw(frame)
            r = [await asyncio.wait_for(f, 5) for f in futs]
            assert r[0]["type"] == "connected"
            assert r[1]["ok"] is True
            assert r[2]["ok"] is True
            assert (await c.next_event())["type"] == "pong"
            assert (await c.next_event())["data"] == "x"
    run(go())


def test_second_connect_and_unknown_type(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as c:
            await c.connect()
            r = await c.request("connect")
            assert r["ok"] is False and r["error"]["code"] == 409
            r = await c.request("frobnicate")
            assert r["ok"] is False and r["error"]["code"] == 400
            # Still usable.
            assert (await c.sub("still.ok"))["ok"] is True
    run(go())


def test_app_ping_gets_pong_many(gateway, codec):
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as c:
            await c.connect()
            for _ in range(10):
                await c.ping()
            evs = await c.collect(10, types=("pong",))
            assert all(e == {"type": "pong"} for e in evs), evs
    run(go())


def test_heartbeat_pings_and_idle_close(gateway):
    """The server pings (WebSocket ping frames); a peer that never answers is
    cut after --idle-timeout-ms even when nothing else happens on the node;
    one that answers (pongs) stays although it sends nothing itself."""
    import struct
    from rtclient import SUBPROTOCOLS, raw_handshake

    g = gateway("--ping-interval-ms", "1000", "--idle-timeout-ms", "2000")

    async def go():
        # 1. The only connection on the node, silent and deaf.
        status, _, s = raw_handshake(g.port, protocols=[SUBPROTOCOLS["json"]])
        assert status == 101
        s.setblocking(False)
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        data = b""
        try:
            while time.monotonic() - t0 < 6:
                chunk = await asyncio.wait_for(loop.sock_recv(s, 4096), 6)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, asyncio.TimeoutError):
            pass
        elapsed = time.monotonic() - t0
        s.close()
        opcodes = []
        i = 0
        while i + 2 <= len(data):
            op, ln = data[i] & 0x0F, data[i + 1] & 0x7F
            i += 2
            if ln == 126:
                ln = struct.unpack(">H", data[i:i + 2])[0]
                i += 2
            opcodes.append(op)
            i += ln
        assert 0x9 in opcodes, "no WebSocket ping from the server: %r" % opcodes
        assert elapsed < 5, "a peer that never answers pings was kept %.1f s" % elapsed
        assert g.metrics()["rtgate_closes_idle_total"] == 1
        # 2. A peer that answers the pings (websockets does) but sends nothing.
        async with Client(g.url(), "msgpack") as c:
            await c.connect()
            await asyncio.sleep(3.5)
            assert not c.closed.is_set(), c.close_code
            await c.ping()
            await c.next_event(("pong",))
    run(go())


def test_connect_without_auth_ignores_token(gateway, codec):
    """No auth configured: a connect with or without a token is accepted and
    the user is anonymous (PROTOCOL.md 2)."""
    g = gateway()

    async def go():
        async with Client(g.url(), codec) as a, Client(g.url(), codec) as b:
            ra = await a.connect(token="eyJhbGciOiJIUzI1NiJ9.e30.not-a-valid-signature")
            rb = await b.connect()
            assert ra["type"] == rb["type"] == "connected"
            assert ra["user"] and rb["user"] and ra["user"] != rb["user"]
            r = await a.request("connect", token=5)  # already connected: 409 even so
            assert r["ok"] is False and r["error"]["code"] in (400, 409)
    run(go())
