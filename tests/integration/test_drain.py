"""SIGTERM drain (issue 2, PROTOCOL.md 5): readiness false, a `disconnect`
with a jittered after_ms in [0, drain_ms) to every client, close 1001, exit 0
within the drain timeout."""
import asyncio
import time

from rtclient import (Client, SUBPROTOCOLS, encode, handshake_status, raw_frame,
                      raw_handshake, run)

DRAIN_MS = 2000
DRAIN_TIMEOUT_MS = 4000
N = 10


def test_sigterm_drain(gateway, codec):
    g = gateway("--drain-ms", str(DRAIN_MS), "--drain-timeout-ms", str(DRAIN_TIMEOUT_MS),
                "--pub-rate", "10000", "--pub-burst", "10000")

    async def go():
        cs = [Client(g.url(), codec, name="c%d" % i) for i in range(N)]
        pub = Client(g.url(), codec, name="pub")
        stuck = None
        try:
            for c in cs + [pub]:
                await c.open()
                await c.connect()
                await c.sub("drain.room")
            # A subscriber that never reads: its send queue cannot flush, so
            # the gateway stays in its drain until the drain timeout.
            status, _, stuck = raw_handshake(g.port, protocols=[SUBPROTOCOLS[codec]],
                                             rcvbuf=4096)
            assert status == 101
            stuck.sendall(raw_frame(encode(codec, {"type": "connect", "id": 1}), codec == "json")
                          + raw_frame(encode(codec, {"type": "sub", "id": 2, "channel": "bulk.x"}),
                                      codec == "json"))
            await pub.requests([("pub", {"channel": "bulk.x", "data": "y" * 32000})] * 200,
                               timeout=30)
            for _ in range(100):
                if g.metrics()["rtgate_outbox_bytes"] > 256 * 1024:
                    break
                await asyncio.sleep(0.05)
            assert g.metrics()["rtgate_outbox_bytes"] > 256 * 1024
            assert g.http_get("/readyz")[0] == 200
            t0 = time.monotonic()
            g.sigterm()
            discs = await asyncio.gather(*(c.next_event(("disconnect",), timeout=5)
                                           for c in cs + [pub]))
            afters = []
            for d in discs:
                after = d.get("after_ms")
                assert {k: v for k, v in d.items() if k != "after_ms"} == {
                    "type": "disconnect", "code": 1001, "reason": "draining",
                    "reconnect": True}, d
                assert isinstance(after, int) and 0 <= after < DRAIN_MS, d
                afters.append(after)
            assert len(set(afters)) > 1, "after_ms is not jittered: %r" % afters
            codes = await asyncio.gather(*(c.wait_closed(timeout=5) for c in cs + [pub]))
            assert [c for c, _ in codes] == [1001] * (N + 1), codes
            # Still draining (the stuck client): not ready, no new connections.
            assert g.alive(), "exited before the drain timeout with a client left"
            assert g.http_get("/readyz", timeout=2)[0] == 503
            status, _ = await handshake_status(g.url(), [SUBPROTOCOLS[codec]])()
            assert status == 503
            assert g.metrics()["rtgate_draining"] == 1
            rc = await asyncio.get_running_loop().run_in_executor(
                None, g.wait_exit, DRAIN_TIMEOUT_MS / 1000.0 + 3)
            elapsed = time.monotonic() - t0
            assert rc == 0, "rtgate exited %s after drain" % rc
            assert elapsed <= DRAIN_TIMEOUT_MS / 1000.0 + 3, elapsed
        finally:
            if stuck is not None:
                stuck.close()
            for c in cs + [pub]:
                c._pending.clear()
                await c.close(check=False)
        for c in cs + [pub]:
            assert not c.violations, (c.name, c.violations)
    run(go())


def test_sigterm_exits_promptly_when_clients_leave(gateway, codec):
    g = gateway("--drain-ms", "1000", "--drain-timeout-ms", "8000")

    async def go():
        cs = [Client(g.url(), codec) for _ in range(3)]
        for c in cs:
            await c.open()
            await c.connect()
        t0 = time.monotonic()
        g.sigterm()
        for c in cs:
            d = await c.expect_disconnect(1001)
            assert 0 <= d["after_ms"] < 1000, d
        rc = await asyncio.get_running_loop().run_in_executor(None, g.wait_exit, 5)
        assert rc == 0
        # All clients answered the close: no need to wait for the drain timeout.
        assert time.monotonic() - t0 < 3.0
        for c in cs:
            await c.close()
    run(go())


def test_sigterm_idle_gateway_exits_0(gateway):
    g = gateway()
    t0 = time.monotonic()
    g.sigterm()
    assert g.wait_exit(5) == 0
    assert time.monotonic() - t0 < 2.0


def test_unflushable_closing_connection_is_cut(gateway):
    """A connection being closed whose peer does not read (its queue cannot
    flush, no close handshake possible) is cut after a bounded grace (the
    gateway's is 5 s), not kept until the drain timeout."""
    g = gateway("--drain-ms", "100", "--drain-timeout-ms", "30000",
                "--pub-rate", "10000", "--pub-burst", "10000")

    async def go():
        async with Client(g.url(), "json") as pub:
            await pub.connect()
            status, _, stuck = raw_handshake(g.port, protocols=[SUBPROTOCOLS["json"]],
                                             rcvbuf=4096)
            try:
                assert status == 101
                stuck.sendall(raw_frame('{"type":"connect","id":1}')
                              + raw_frame('{"type":"sub","id":2,"channel":"bulk.x"}'))
                await pub.requests([("pub", {"channel": "bulk.x", "data": "y" * 32000})] * 200,
                                   timeout=30)
                for _ in range(100):
                    if g.metrics()["rtgate_outbox_bytes"] > 256 * 1024:
                        break
                    await asyncio.sleep(0.05)
                assert g.metrics()["rtgate_outbox_bytes"] > 256 * 1024
                t0 = time.monotonic()
                g.sigterm()
                await pub.expect_disconnect(1001)
                rc = await asyncio.get_running_loop().run_in_executor(None, g.wait_exit, 10)
                elapsed = time.monotonic() - t0
                assert rc is not None, "the unread connection held the drain over 10 s"
                assert rc == 0, rc
                assert elapsed < 10, "the unread connection held the drain %.1f s" % elapsed
            finally:
                stuck.close()
    run(go())


def test_drain_grace_keeps_sessions_while_readiness_is_false(gateway, codec):
    """Issue 14: on SIGTERM /readyz turns false and new handshakes get 503 at
    once, but sessions keep being served for --drain-grace-ms (so a load
    balancer sees the node leave before any client is sent away); then the
    closes are spread over --drain-ms."""
    grace_ms, drain_ms, n = 1500, 1000, 12
    g = gateway("--drain-grace-ms", str(grace_ms), "--drain-ms", str(drain_ms),
                "--drain-timeout-ms", "8000", "--pub-rate", "1000", "--pub-burst", "1000")

    async def go():
        cs = [Client(g.url(), codec, name="c%d" % i) for i in range(n)]
        for c in cs:
            await c.open()
            await c.connect()
            await c.sub("grace.room")
        pub = cs[0]
        t0 = time.monotonic()
        g.sigterm()
        for _ in range(40):
            if g.http_get("/readyz", timeout=2)[0] == 503:
                break
            await asyncio.sleep(0.02)
        assert g.http_get("/readyz", timeout=2)[0] == 503
        status, headers = await handshake_status(g.url(), [SUBPROTOCOLS[codec]])()
        assert status == 503 and int(headers["Retry-After"]) >= 1, (status, headers)
        # Within the grace: still served, nobody told to go.
        await pub.pub("grace.room", "still here")
        for c in cs:
            m = await c.next_event(("msg", "disconnect"), timeout=5)
            assert m["type"] == "msg" and m["data"] == "still here", m
        assert time.monotonic() - t0 < grace_ms / 1000.0, "the test itself was too slow"
        told = await asyncio.gather(*(c.next_event(("disconnect",), timeout=10) for c in cs))
        assert all(d["code"] == 1001 and d["reconnect"] is True for d in told), told
        codes = await asyncio.gather(*(c.wait_closed(timeout=10) for c in cs))
        assert [c for c, _ in codes] == [1001] * n, codes
        rc = await asyncio.get_running_loop().run_in_executor(None, g.wait_exit, 8)
        assert rc == 0
        for c in cs:
            c._pending.clear()
            await c.close(check=False)
    run(go())


def test_drain_closes_are_spread_after_the_grace(gateway):
    """The closes themselves (not only the advised after_ms) come in slices
    over --drain-ms, after the grace: clients that ignore after_ms still
    reconnect spread out."""
    grace_ms, drain_ms, n = 600, 1500, 30
    g = gateway("--drain-grace-ms", str(grace_ms), "--drain-ms", str(drain_ms),
                "--drain-timeout-ms", "8000")

    async def go():
        cs = [Client(g.url(), "json", name="c%d" % i) for i in range(n)]
        for c in cs:
            await c.open()
            await c.connect()
        t0 = time.monotonic()
        g.sigterm()

        async def when_told(c):
            await c.next_event(("disconnect",), timeout=10)
            return time.monotonic() - t0
        at = sorted(await asyncio.gather(*(when_told(c) for c in cs)))
        for c in cs:
            await c.close(check=False)
        return at
    at = run(go())
    assert at[0] >= grace_ms / 1000.0 - 0.05, at
    # Spread over the window: the last is told at least half a window after
    # the first (all at once would be a few ms), and none far past it.
    assert at[-1] - at[0] >= drain_ms / 1000.0 / 2, at
    assert at[-1] <= (grace_ms + drain_ms) / 1000.0 + 2.0, at
    assert g.wait_exit(8) == 0
