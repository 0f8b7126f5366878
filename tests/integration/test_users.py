"""Per-user limits and channel presence on one node, the memory engine
(docs/users.md, docs/protocol.md "Channel presence"): the same limits as a
fleet, the reply's members and the events, permissions, counting past the
cap. tests/nats/test_users_*.py has the fleet."""
import asyncio
import time

import pytest

from rtclient import Client, run
from tokens import KeySet


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeySet(tmp_path_factory.mktemp("keys"))


def flags(keys, *extra):
    return (*keys.flags("HS256"), "--allow-anonymous", "--sub-allow", ">", "--pub-allow", ">",
            "--pub-rate", "1000", "--pub-burst", "1000", "--msg-rate", "10000",
            "--msg-burst", "10000", *extra)


async def connect(url, keys, user=None, codec="json", **claims):
    c = Client(url, codec)
    await c.open()
    if user is None:
        r = await c.request("connect")
    else:
        r = await c.request("connect", token=keys.token("HS256", sub=user, **claims))
    return c, r


def test_a_users_publish_rate_covers_all_its_connections(gateway, keys):
    g = gateway(*flags(keys, "--user-pub-rate", "5", "--user-pub-burst", "5"))

    async def go():
        carol, r = await connect(g.url(), keys, "carol")
        assert r["limits"]["user_pub_rate"] == 5 and r["limits"]["user_pub_burst"] == 5, r
        assert "user_max_conns" not in r["limits"]
        await carol.close()
        alice = [(await connect(g.url(), keys, "alice"))[0] for _ in range(3)]
        bob, _ = await connect(g.url(), keys, "bob", "msgpack")
        results = [await alice[i % 3].pub("c", {"i": i}) for i in range(12)]
        ok = [r for r in results if r.get("ok")]
        refused = [r for r in results if not r.get("ok")]
        assert 5 <= len(ok) <= 6, results  # the burst, and what refills while they run
        for r in refused:
            assert r["error"]["code"] == 429 and r["error"]["retry_after_ms"] >= 1, r
            assert r["error"]["message"] == "user publish rate exceeded"
        bob_ok = [(await bob.pub("c", {"b": i})).get("ok") for i in range(5)]
        assert all(bob_ok), "bob is not alice"
        await asyncio.sleep(0.45)  # about two tokens back
        again = [await alice[0].pub("c", {"x": i}) for i in range(5)]
        assert 1 <= sum(bool(r.get("ok")) for r in again) <= 3, again
        # Anonymous connections are each their own user.
        anons = [(await connect(g.url(), keys))[0] for _ in range(2)]
        for a in anons:
            got = [bool((await a.pub("c", {"a": 1})).get("ok")) for _ in range(7)]
            assert 5 <= sum(got) <= 6, got
        for c in alice + anons + [bob]:
            await c.close()
        return True

    assert run(go())


def test_a_users_connections_over_the_limit_get_429_then_close_4029(gateway, keys, codec):
    g = gateway(*flags(keys, "--user-max-conns", "2"))

    async def go():
        held = [(await connect(g.url(), keys, "alice", codec))[0] for _ in range(2)]
        c, r = await connect(g.url(), keys, "alice", codec)
        assert r["type"] == "reply" and r["error"]["code"] == 429, r
        assert r["error"]["retry_after_ms"] >= 1
        d = await c.expect_disconnect(4029)
        assert d["reason"] == "too_many_connections" and d["reconnect"] is True
        assert d["after_ms"] == r["error"]["retry_after_ms"]
        await c.close()
        bob, r = await connect(g.url(), keys, "bob", codec)
        assert r["type"] == "connected"
        anons = [await connect(g.url(), keys, None, codec) for _ in range(4)]
        assert all(r["type"] == "connected" for _, r in anons), "anonymous: one user each"
        await held[0].close()
        await asyncio.sleep(0.1)
        c, r = await connect(g.url(), keys, "alice", codec)
        assert r["type"] == "connected", r
        for x in held[1:] + [c, bob] + [a for a, _ in anons]:
            await x.close()
        m = g.metrics()
        assert m["rtgate_user_conns_refused_total"] == 1
        return True

    assert run(go())


def members(reply):
    return {m["user"]: m for m in reply["presence"]["members"]}


def test_presence_reply_and_events_on_one_node(gateway, keys, codec):
    g = gateway(*flags(keys))

    async def go():
        w, _ = await connect(g.url(), keys, "walt", codec, info={"role": "admin"})
        r = await w.sub("room", presence=True)
        assert r["ok"] and r["presence"] == {"count": 1, "members": [
            {"user": "walt", "clients": 1, "info": {"role": "admin"}}]}, r
        plain = await w.sub("other")
        assert "presence" not in plain, "no presence unless asked"
        a1, _ = await connect(g.url(), keys, "alice", codec)
        r = await a1.sub("room", presence=True)
        assert set(members(r)) == {"walt", "alice"} and "info" not in members(r)["alice"]
        ev = await w.next_event(["presence"])
        assert ev == {"type": "presence", "channel": "room", "event": "join", "user": "alice",
                      "clients": 1, "count": 2}, ev
        a2, _ = await connect(g.url(), keys, "alice", codec)
        r = await a2.sub("room", presence=True)
        assert members(r)["alice"]["clients"] == 2
        anon, ra = await connect(g.url(), keys, None, codec)
        r = await anon.sub("room", presence=True)
        assert ra["user"] in members(r), "anonymous members show their anon- id"
        ev = await w.next_event(["presence"])
        assert ev["event"] == "join" and ev["user"] == ra["user"]
        await anon.close()
        ev = await w.next_event(["presence"])
        assert ev == {"type": "presence", "channel": "room", "event": "leave",
                      "user": ra["user"], "count": 2}, ev
        await a1.close()
        assert await w.quiet(0.3, types=("presence",)) == [], "alice is still in"
        a2.drain_events()
        assert (await a2.unsub("room"))["ok"]
        ev = await w.next_event(["presence"])
        assert ev["event"] == "leave" and ev["user"] == "alice" and ev["count"] == 1
        assert await a2.quiet(0.2, types=("presence",)) == [], "an unsubscribed one hears nothing"
        bad = await w.request("sub", channel="room2", presence="yes")
        assert bad["error"]["code"] == 400
        again = await w.sub("room", presence=True)
        assert again["error"]["code"] == 409 and "presence" not in again
        x, _ = await connect(g.url(), keys, "xavier", codec)
        r = await x.sub("room", presence=True)
        assert members(r)["walt"]["clients"] == 1, "the 409 entered nothing: %r" % r
        await x.close()
        for c in (w, a2):
            await c.close()
        return True

    assert run(go())


def test_presence_needs_presence_allow_or_the_sub_rule(gateway, keys):
    g = gateway(*keys.flags("HS256"), "--sub-allow", "chat.>")

    async def go():
        a, _ = await connect(g.url(), keys, "a", presence_allow=["public.>"], sub_allow=[">"])
        r = await a.sub("chat.x", presence=True)
        assert r["error"]["code"] == 403, r
        assert r["error"]["message"] == "not allowed to take part in the presence of chat.x"
        assert (await a.sub("chat.x"))["ok"], "a plain sub is still allowed"
        assert (await a.sub("public.x", presence=True))["ok"]
        b, _ = await connect(g.url(), keys, "b")  # no claims: --sub-allow decides
        assert (await b.sub("chat.y", presence=True))["ok"]
        assert (await b.sub("news.y", presence=True))["error"]["code"] == 403
        for c in (a, b):
            await c.close()
        return True

    assert run(go())
    h = gateway(*keys.flags("HS256"), "--sub-allow", ">", "--presence-allow", "lobby")

    async def go2():
        c, _ = await connect(h.url(), keys, "c")
        assert (await c.sub("lobby", presence=True))["ok"]
        assert (await c.sub("room", presence=True))["error"]["code"] == 403
        assert (await c.sub("room"))["ok"]
        await c.close()
        return True

    assert run(go2())


def test_past_the_cap_a_channel_counts_and_lists_again_under_half(gateway, keys):
    g = gateway(*flags(keys, "--presence-max-members", "4"))

    async def go():
        cs = []
        for i in range(5):
            c, _ = await connect(g.url(), keys, "u%d" % i)
            r = await c.sub("big", presence=True)
            cs.append(c)
        assert r["presence"] == {"count": 5, "counting": True}, r
        evs = await cs[0].collect(5, types=("presence",))
        assert [e["event"] for e in evs] == ["join"] * 4 + ["count"], evs
        assert [e.get("user") for e in evs[:4]] == ["u1", "u2", "u3", "u4"]
        assert evs[4] == {"type": "presence", "channel": "big", "event": "count", "count": 5}
        for c in cs[2:]:
            await c.close()
        deadline = time.monotonic() + 5
        while True:
            ev = await cs[0].next_event(["presence"], timeout=deadline - time.monotonic())
            if ev["event"] == "sync":
                break
            assert ev["event"] == "count", ev
        assert ev["count"] == 2 and {m["user"] for m in ev["members"]} == {"u0", "u1"}, ev
        for c in cs[:2]:
            await c.close()
        return True

    assert run(go())
