"""Per-user limits across a fleet (docs/users.md): gateways on one
nats-server share each user's publish bucket and connection count, so a
user's connections spread over the nodes get one user's rate and one
user's connections, while a node joins and another leaves; other users are
not affected.

The bound checked is the documented one: over a window of t seconds a user
gets at most burst + rate * t + (k - 1) * (burst + rate * D) publishes,
k the nodes it publishes on, D the report interval plus the bus's latency
(taken as a generous 0.5 s here). Per-node buckets alone would give k times
burst + rate * t, which these tests tell apart."""
import asyncio
import time

from rtclient import Client, run

RATE, BURST = 20, 20
D_S = 0.5  # report interval (20 ms) + bus latency, with room for a loaded machine
TTL_MS = 3000


def flags(keys, *extra):
    return (*keys.flags("HS256"), "--sub-allow", ">", "--pub-allow", ">",
            "--abuse-limit", "1000000", "--presence-ttl-ms", str(TTL_MS), *extra)


async def connect(url, keys, user, codec="json"):
    c = Client(url, codec)
    await c.open()
    r = await c.request("connect", token=keys.token("HS256", sub=user))
    return c, r


class Tally:
    def __init__(self):
        self.ok = 0
        self.refused = 0
        self.first = None
        self.last = None


async def hammer(c, tally, stop, channel="eph.rate"):
    """Publishes back to back until stop is set; a 429 must carry retry_after_ms."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            r = await c.pub(channel, {"n": n}, timeout=10)
        except (ConnectionError, asyncio.TimeoutError):
            return  # its node was killed
        now = time.monotonic()
        tally.first = tally.first or now
        if r.get("ok"):
            tally.ok += 1
            tally.last = now
        else:
            assert r["error"]["code"] == 429, r
            assert r["error"]["retry_after_ms"] >= 1, r
            tally.refused += 1
            await asyncio.sleep(0.002)


def test_a_users_publishes_across_nodes_hold_to_one_rate_while_nodes_come_and_go(
        nats, nodes, gateway, keys):
    a, b, c = nodes(nats.url, 3, *flags(keys, "--user-pub-rate", str(RATE),
                                           "--user-pub-burst", str(BURST)))

    async def go():
        stop = asyncio.Event()
        alice = Tally()
        conns = []
        for g in (a, b, c, a, b, c):
            cl, r = await connect(g.url(), keys, "alice")
            assert r["type"] == "connected", r
            conns.append(cl)
        bob, r = await connect(a.url(), keys, "bob")
        assert r["type"] == "connected"
        await asyncio.sleep(0.5)  # the nodes heard of each other
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(hammer(cl, alice, stop)) for cl in conns]

        bob_results = []

        async def bob_steady():
            while not stop.is_set():
                bob_results.append(await bob.pub("eph.bob", {"x": 1}))
                await asyncio.sleep(0.2)
        tasks.append(asyncio.ensure_future(bob_steady()))

        # A fourth node joins with two more of alice's connections, then dies (SIGKILL).
        await asyncio.sleep(2.0)
        loop = asyncio.get_running_loop()
        d = await loop.run_in_executor(
            None, lambda: nodes(nats.url, 1, *flags(keys, "--user-pub-rate", str(RATE),
                                                     "--user-pub-burst", str(BURST)))[0])
        extra = []
        for _ in range(2):
            cl, r = await connect(d.url(), keys, "alice")
            assert r["type"] == "connected", r
            extra.append(cl)
        tasks += [asyncio.ensure_future(hammer(cl, alice, stop)) for cl in extra]
        await asyncio.sleep(2.5)
        d.proc.kill()
        d.expected_rc = -9
        await asyncio.sleep(2.5)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.monotonic() - t0
        for cl in conns + extra + [bob]:
            await cl.close(check=False)
        return alice, elapsed, bob_results

    alice, elapsed, bob_results = run(go(), timeout=90)
    k = 4  # nodes alice published on at once, at most
    bound = BURST + RATE * elapsed + (k - 1) * (BURST + RATE * D_S)
    per_node = 3 * (BURST + RATE * elapsed)  # what per-node buckets alone would allow
    assert alice.refused > 10 * alice.ok, "the load was not above the rate: %d ok, %d refused" % (
        alice.ok, alice.refused)
    assert alice.ok <= bound, "alice got %d publishes in %.1f s over %d nodes; bound %.0f" % (
        alice.ok, elapsed, k, bound)
    assert bound < per_node
    assert alice.ok >= 0.6 * RATE * elapsed, "alice got only %d in %.1f s" % (alice.ok, elapsed)
    assert bob_results and all(r.get("ok") for r in bob_results), \
        "bob was limited by alice: %r" % [r for r in bob_results if not r.get("ok")][:3]


async def expect_refused(url, keys, user):
    """A connect over the limit: 429 with retry_after_ms, then disconnect and close 4029."""
    cl, r = await connect(url, keys, user)
    try:
        assert r["type"] == "reply" and r["error"]["code"] == 429, r
        assert r["error"]["retry_after_ms"] >= 1
        d = await cl.expect_disconnect(4029)
        assert d["reason"] == "too_many_connections" and d["reconnect"] is True
        assert d["after_ms"] >= 1
    finally:
        await cl.close(check=False)


async def connect_eventually(url, keys, user, timeout):
    """Connects once the fleet lets user in; returns the client."""
    deadline = time.monotonic() + timeout
    while True:
        cl, r = await connect(url, keys, user)
        if r["type"] == "connected":
            return cl
        await cl.close(check=False)
        assert time.monotonic() < deadline, "still refused after %.1f s: %r" % (timeout, r)
        await asyncio.sleep(0.2)


def test_a_users_connections_across_nodes_hold_to_one_limit(nats, nodes, keys):
    a, b, c = nodes(nats.url, 3, *flags(keys, "--user-max-conns", "4"))

    async def go():
        held = []
        for g in (a, b, c, a):
            cl, r = await connect(g.url(), keys, "alice")
            assert r["type"] == "connected", r
            held.append(cl)
            await asyncio.sleep(0.3)  # reported before the next one
        for g in (a, b, c):
            await expect_refused(g.url(), keys, "alice")
        other, r = await connect(b.url(), keys, "bob")
        assert r["type"] == "connected", "bob is not alice"
        await other.close()
        # One closes on node a: a place is free on node c.
        await held.pop(0).close()
        held.append(await connect_eventually(c.url(), keys, "alice", 5))
        await asyncio.sleep(1.0)  # c's new connection reported to a (the race below is its own case)
        await expect_refused(a.url(), keys, "alice")

        # A race: carol opens 9 at once on 3 nodes; 4 stay, the newest go with 4029.
        results = await asyncio.gather(*[connect(g.url(), keys, "carol")
                                         for g in (a, b, c) * 3])
        carol = [cl for cl, r in results if r["type"] == "connected"]
        for cl, r in results:
            if r["type"] != "connected":
                assert r["error"]["code"] == 429
        deadline = time.monotonic() + 10
        while sum(not cl.closed.is_set() for cl in carol) > 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # nothing else goes
        alive = [cl for cl in carol if not cl.closed.is_set()]
        assert len(alive) == 4, "%d of carol's connections stay" % len(alive)
        for cl in carol:
            if cl.closed.is_set():
                assert cl.close_code == 4029, cl.close_code
                ds = [m for m in cl.all if m.get("type") == "disconnect"]
                assert ds and ds[0]["reason"] == "too_many_connections"
        for cl in carol + held:
            await cl.close(check=False)
        return True

    assert run(go(), timeout=90)


def test_a_joining_node_knows_the_limit_and_a_dead_nodes_places_free_after_the_ttl(
        nats, nodes, keys):
    a, b = nodes(nats.url, 2, *flags(keys, "--user-max-conns", "3"))

    async def go():
        held = []
        for g in (a, b, b):
            cl, r = await connect(g.url(), keys, "alice")
            assert r["type"] == "connected", r
            held.append(cl)
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        (d,) = await loop.run_in_executor(
            None, lambda: nodes(nats.url, 1, *flags(keys, "--user-max-conns", "3")))
        await asyncio.sleep(1.0)  # hello, then everybody's full state
        await expect_refused(d.url(), keys, "alice")
        # Node b dies with two of alice's connections: they count until the ttl.
        b.proc.kill()
        b.expected_rc = -9
        killed = time.monotonic()
        await expect_refused(a.url(), keys, "alice")
        cl1 = await connect_eventually(d.url(), keys, "alice", TTL_MS / 1000 + 5)
        freed_after = time.monotonic() - killed
        cl2 = await connect_eventually(a.url(), keys, "alice", 3)
        await expect_refused(a.url(), keys, "alice")
        for cl in held + [cl1, cl2]:
            await cl.close(check=False)
        return freed_after

    freed_after = run(go(), timeout=90)
    assert freed_after <= TTL_MS / 1000 + 5
