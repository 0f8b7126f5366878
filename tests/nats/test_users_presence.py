"""Channel presence across a fleet (docs/protocol.md, Channel presence;
docs/users.md): gateways on one nats-server show each channel's members,
users not connections, with join and leave events on every node; a
SIGKILLed node's members leave within --presence-ttl-ms; and under churn
every watching client, rebuilding the member set from its sub reply and the
events after it (checking each: no join of a member it has, no leave of one
it has not), ends with exactly the truth."""
import asyncio
import random
import time

from rtclient import Client, run

TTL_MS = 3000


def flags(keys, *extra):
    return (*keys.flags("HS256"), "--sub-allow", ">", "--pub-allow", ">",
            "--presence-ttl-ms", str(TTL_MS), *extra)


class View:
    """A watcher's members, rebuilt from its reply and the events after it."""

    def __init__(self, reply):
        p = reply["presence"]
        self.counting = bool(p.get("counting"))
        self.count = p["count"]
        self.members = {}
        if not self.counting:
            for m in p["members"]:
                assert m["user"] not in self.members, "listed twice: %r" % p
                assert m["clients"] >= 1
                self.members[m["user"]] = m
            assert len(self.members) == self.count, p

    def apply(self, ev):
        kind = ev["event"]
        if kind == "join":
            assert not self.counting
            assert ev["user"] not in self.members, "join of a member it has: %r" % ev
            self.members[ev["user"]] = ev
        elif kind == "leave":
            assert not self.counting
            assert ev["user"] in self.members, "leave of a member it has not: %r" % ev
            del self.members[ev["user"]]
        elif kind == "count":
            self.counting = True
        elif kind == "sync":
            self.counting = False
            self.members = {m["user"]: m for m in ev["members"]}
        else:
            raise AssertionError("unknown presence event %r" % ev)
        self.count = ev["count"]
        if not self.counting:
            assert len(self.members) == self.count, ev


def rebuild(cl, sub_id, channel):
    """The view of channel from everything cl received, checked message by message."""
    view = None
    for m in cl.all:
        if view is None:
            if m.get("type") == "reply" and m.get("id") == sub_id:
                assert m.get("ok"), m
                view = View(m)
        elif m.get("type") == "presence" and m.get("channel") == channel:
            view.apply(m)
    assert view is not None, "no reply to the sub"
    return view


async def member(url, keys, user, channel, info=None, codec="json"):
    """A connection of user in channel's presence: (client, sub id, reply)."""
    cl = Client(url, codec)
    await cl.open()
    claims = {"info": info} if info else {}
    await cl.connect(token=keys.token("HS256", sub=user, **claims))
    rid, fut, sending = cl.request_nowait("sub", channel=channel, presence=True)
    await sending
    r = await asyncio.wait_for(fut, 10)
    assert r.get("ok"), r
    return cl, rid, r


async def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "%s not within %.1f s" % (what, timeout)
        await asyncio.sleep(0.05)


def test_members_are_users_and_every_node_sees_joins_and_leaves(nats, nodes, keys):
    a, b, c = nodes(nats.url, 3, *flags(keys))

    async def go():
        w, wid, r = await member(a.url(), keys, "walt", "eph.room", codec="msgpack")
        assert r["presence"]["count"] == 1 and not r["presence"].get("partial"), r
        a1, a1id, r = await member(b.url(), keys, "alice", "eph.room",
                                   info={"name": "Alice", "n": [1, 2]})
        assert {m["user"] for m in r["presence"]["members"]} == {"walt", "alice"}
        await wait_for(lambda: rebuild(w, wid, "eph.room").members.keys() == {"walt", "alice"},
                       5, "walt sees alice")
        join = [m for m in w.all if m.get("type") == "presence"][0]
        assert join == {"type": "presence", "channel": "eph.room", "event": "join",
                        "user": "alice", "clients": 1, "info": {"name": "Alice", "n": [1, 2]},
                        "count": 2}, join
        # Alice's second connection, on another node: one member, two clients, no event.
        a2, a2id, r = await member(c.url(), keys, "alice", "eph.room")
        alice = [m for m in r["presence"]["members"] if m["user"] == "alice"][0]
        assert alice["clients"] == 2 and alice["info"] == {"name": "Alice", "n": [1, 2]}, r
        bob, bobid, _ = await member(c.url(), keys, "bob", "eph.room")
        everyone = [(w, wid), (a1, a1id), (a2, a2id), (bob, bobid)]
        await wait_for(lambda: all(rebuild(cl, i, "eph.room").members.keys() ==
                                   {"walt", "alice", "bob"} for cl, i in everyone),
                       5, "every member sees three")
        assert sum(m.get("event") == "join" and m.get("user") == "alice" for m in w.all) == 1
        # One of alice's connections goes: she stays. The other goes: everybody sees her leave.
        await a1.close()
        await asyncio.sleep(0.5)
        assert "alice" in rebuild(w, wid, "eph.room").members
        assert (await a2.unsub("eph.room"))["ok"]
        rest = [(w, wid), (bob, bobid)]
        await wait_for(lambda: all(rebuild(cl, i, "eph.room").members.keys() == {"walt", "bob"}
                                   for cl, i in rest), 5, "alice's leave")
        for cl in (w, a2, bob):
            await cl.close()
        return True

    assert run(go(), timeout=60)


def test_a_killed_nodes_members_leave_within_the_ttl(nats, nodes, keys):
    a, b, c = nodes(nats.url, 3, *flags(keys))

    async def go():
        w, wid, _ = await member(a.url(), keys, "walt", "eph.room")
        x, xid, _ = await member(b.url(), keys, "xena", "eph.room")
        y, _, _ = await member(c.url(), keys, "yuri", "eph.room")
        z, _, _ = await member(c.url(), keys, "zoe", "eph.room")
        for cl, i in ((w, wid), (x, xid)):
            await wait_for(lambda: len(rebuild(cl, i, "eph.room").members) == 4, 5, "4 members")
        c.proc.kill()
        c.expected_rc = -9
        killed = time.monotonic()
        await wait_for(lambda: all(rebuild(cl, i, "eph.room").members.keys() == {"walt", "xena"}
                                   for cl, i in ((w, wid), (x, xid))),
                       TTL_MS / 1000 + 3, "the dead node's members leaving")
        gone_after = time.monotonic() - killed
        for cl in (w, x, y, z):
            await cl.close(check=False)
        return gone_after

    gone_after = run(go(), timeout=60)
    assert gone_after <= TTL_MS / 1000 + 1.5, "left %.1f s after the kill" % gone_after


def test_churn_on_three_nodes_every_view_is_the_truth(nats, nodes, keys):
    """Connections of 10 users come and go on 3 nodes (sub, unsub, close, re-sub, in
    both codecs) in three bursts of 2 s; each event is checked as it is applied, and
    after each burst every watcher's view equals the users that have a connection in
    the channel."""
    gws = nodes(nats.url, 3, *flags(keys))
    rng = random.Random(12)
    users = ["u%d" % i for i in range(10)]

    async def check(live):
        truth = {e[2] for e in live if e[3]}
        watchers = [e for e in live if e[3]]

        def settled():
            return all(rebuild(e[0], e[1], "eph.churn").members.keys() == truth
                       for e in watchers)
        try:
            await wait_for(settled, 10, "every view equal to the truth")
        except AssertionError:
            bad = [(e[2], sorted(rebuild(e[0], e[1], "eph.churn").members)) for e in watchers]
            raise AssertionError("truth %r, views %r" % (sorted(truth), bad))
        return len(watchers)

    async def go():
        live = []  # [client, sub id, user, subscribed]
        ops = checked = 0
        for _burst in range(3):
            end = time.monotonic() + 2
            while time.monotonic() < end:
                ops += 1
                r = rng.random()
                if len(live) < 12 or (r < 0.4 and len(live) < 24):
                    cl, rid, _ = await member(rng.choice(gws).url(), keys, rng.choice(users),
                                              "eph.churn", codec=rng.choice(("json", "msgpack")))
                    live.append([cl, rid, cl.connected["user"], True])
                elif r < 0.7:
                    e = rng.choice(live)
                    if e[3]:
                        assert (await e[0].unsub("eph.churn"))["ok"]
                        e[3] = False
                    else:
                        rid, fut, sending = e[0].request_nowait("sub", channel="eph.churn",
                                                                presence=True)
                        await sending
                        assert (await asyncio.wait_for(fut, 10))["ok"]
                        e[1], e[3] = rid, True
                else:
                    await live.pop(rng.randrange(len(live)))[0].close()
                await asyncio.sleep(rng.random() * 0.02)
            checked += await check(live)
        for e in live:
            await e[0].close()
        return ops, checked

    ops, checked = run(go(), timeout=90)
    assert ops > 60 and checked > 20, (ops, checked)
