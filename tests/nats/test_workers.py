"""--workers N: N gateway processes share one port (SO_REUSEPORT), each its
own node on NATS; clients spread over them and still reach each other."""
import asyncio
import time

from conftest import FAST
from rtclient import Client, run


def test_workers_share_the_port_and_the_channels(nats, gateway, codec):
    g = gateway("--nats", nats.url, "--ephemeral", "eph.>", "--workers", "2", *FAST)

    async def go():
        clients = []
        try:
            # /healthz answered means one worker listens; the other may still be
            # starting on a loaded machine: connect until both answered (or time out).
            deadline = time.monotonic() + 15.0
            nodes = set()
            while len(clients) < 24 or (len(nodes) < 2 and time.monotonic() < deadline):
                c = Client(g.url(), codec)
                await c.open()
                await c.connect()
                clients.append(c)
                nodes.add(c.connected["node"])
                if len(clients) >= 24 and len(nodes) < 2:
                    await asyncio.sleep(0.2)
            # The kernel spreads connections over both workers' sockets.
            assert len(nodes) == 2 and all(n.endswith(("-w0", "-w1")) for n in nodes), nodes
            by_node = {}
            for c in clients:
                by_node.setdefault(c.connected["node"], c)
            a, b = by_node.values()
            for ch in ("eph.w", "dur.w"):
                assert (await a.sub(ch))["ok"] is True
                r = await b.pub(ch, {"from": "other worker"})
                assert r["ok"] is True, r
                m = await a.next_event(("msg",))
                assert (m["channel"], m["data"]) == (ch, {"from": "other worker"}), m
            # Presence spans the workers too: a watch on one sees a member on the other.
            r = await a.request("geo.watch", space="w", lat=52.52, lon=13.405, radius_m=500)
            assert r["ok"] is True and r["members"] == [], r
            r = await b.request("geo.set", space="w", lat=52.5201, lon=13.405, meta={"w": 1})
            assert r["ok"] is True, r
            e = await a.next_event(("geo",))
            assert (e["event"], e["member"]["client"], e["member"]["meta"]) == (
                "join", b.connected["client"], {"w": 1}), e
            r = await a.request("geo.near", space="w", lat=52.52, lon=13.405, radius_m=500)
            assert [m["client"] for m in r["members"]] == [b.connected["client"]], r
        finally:
            for c in clients:
                await c.close()
    run(go())
