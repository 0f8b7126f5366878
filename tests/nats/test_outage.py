"""NATS outages under traffic: client connections stay up, publishes get 503
with retry_after_ms, /readyz turns false, subscriptions come back by
themselves, and every acknowledged message reaches the subscribers in order
with no duplicate. A 3-node cluster with replicas 3 loses a node."""
import asyncio
import time

from conftest import FAST
from rtclient import Client, run


async def connected(url, codec, **kw):
    c = Client(url, codec, **kw)
    await c.open()
    await c.connect()
    return c


class Publisher:
    """Publishes n durable messages with msg_ids, retrying refused ones after
    retry_after_ms (the client behaviour PROTOCOL.md asks for)."""

    def __init__(self, client, channel, n):
        self.c, self.channel, self.n = client, channel, n
        self.acked = {}  # msg_id -> seq
        self.refusals = []

    async def run(self):
        i = 0
        while i < self.n:
            mid = "%s-%d" % (self.channel, i)
            try:
                r = await self.c.pub(self.channel, {"i": i}, msg_id=mid, timeout=10)
            except asyncio.TimeoutError:
                continue  # answered later or never: retry with the same msg_id
            if r["ok"]:
                assert mid not in self.acked or self.acked[mid] == r["seq"]
                self.acked[mid] = r["seq"]
                i += 1
                await asyncio.sleep(0.005)
            else:
                self.refusals.append(r["error"])
                await asyncio.sleep(r["error"]["retry_after_ms"] / 1000.0 / 4)


def readyz(g):
    try:
        return g.http_get("/readyz", timeout=2)[0]
    except OSError as e:
        return str(e)


def check_delivery(got, acked_seqs):
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(set(seqs)), "out of order or duplicated: %r" % seqs
    missing = set(acked_seqs) - set(seqs)
    assert not missing, "acknowledged but never delivered: %r" % sorted(missing)


def test_nats_restart_under_traffic(nats, nodes, codec):
    a, b = nodes(nats.url)

    async def go():
        sub = await connected(a.url(), codec, name="durable-sub", auto_ack=True)
        esub = await connected(a.url(), codec, name="eph-sub")
        pc = await connected(b.url(), "json", name="publisher")
        try:
            assert (await sub.sub("dur.out"))["ok"]
            assert (await esub.sub("eph.out"))["ok"]
            pub = Publisher(pc, "dur.out", 300)
            task = asyncio.ensure_future(pub.run())
            await asyncio.sleep(0.5)
            assert not task.done()
            nats.kill()
            # Outage: connections stay up, publishes are refused with 503.
            deadline = time.monotonic() + 5
            while not pub.refusals and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert pub.refusals, "no publish was refused during the outage"
            assert all(e["code"] == 503 and e["retry_after_ms"] > 0 for e in pub.refusals)
            assert readyz(a) == 503 and readyz(b) == 503
            r = await esub.pub("eph.out", "during")
            assert r["ok"] is False and r["error"]["code"] == 503
            assert not sub.closed.is_set() and not pc.closed.is_set()
            await asyncio.sleep(1.0)
            nats.start()
            await asyncio.wait_for(task, 60)
            assert readyz(a) == 200 and readyz(b) == 200
            got = await sub.collect(len(pub.acked), timeout=30)
            check_delivery(got, pub.acked.values())
            assert await sub.quiet(0.5) == []
            # The ephemeral subscription came back by itself.
            deadline = time.monotonic() + 10
            while True:
                assert (await pc.pub("eph.out", "after"))["ok"]
                try:
                    m = await esub.next_event(("msg",), timeout=0.5)
                    assert m["data"] == "after"
                    break
                except asyncio.TimeoutError:
                    assert time.monotonic() < deadline, "ephemeral subscription did not return"
        finally:
            for c in (sub, esub, pc):
                await c.close()
    run(go(), 150)


def test_cluster_node_loss_with_replicas_3(nats_cluster, nodes):
    """Durable channels at replicas 3; one NATS node is killed under traffic:
    no acknowledged message is lost, and publishing goes on."""
    urls = [s.url for s in nats_cluster]
    a, b = nodes(urls, 2, "--nats-replicas", "3")

    async def go():
        sub = await connected(a.url(), "msgpack", name="sub", auto_ack=True)
        pc = await connected(b.url(), "json", name="publisher")
        try:
            assert (await sub.sub("dur.ha"))["ok"]
            pub = Publisher(pc, "dur.ha", 300)
            task = asyncio.ensure_future(pub.run())
            await asyncio.sleep(0.5)
            nats_cluster[0].kill()
            await asyncio.wait_for(task, 90)
            got = await sub.collect(len(pub.acked), timeout=30)
            check_delivery(got, pub.acked.values())
            assert await sub.quiet(0.5) == []
        finally:
            await sub.close()
            await pc.close()
    run(go(), 150)


def test_no_jetstream_at_start_is_waited_for_not_fatal(tmp_path, gateway):
    """A gateway started while JetStream cannot answer (here: a server without
    it, so the stream check gets no responders, as during a leader election)
    keeps running: /healthz 200, /readyz 503, durable subs and pubs 503 with
    retry_after_ms, ephemeral channels work. It retries with backoff, logs
    it once, and is ready once JetStream is there. Main's gateway exits."""
    from conftest import NatsServer
    srv = NatsServer(str(tmp_path), "nojs")
    srv.jetstream = False
    srv.start()
    try:
        g = gateway("--nats", srv.url, "--ephemeral", "eph.>", *FAST, ready=False)

        async def before():
            c = await connected(g.url(), "json", name="early")
            try:
                r = await c.sub("dur.js")
                assert not r["ok"] and r["error"]["code"] == 503, r
                assert r["error"]["retry_after_ms"] > 0
                r = await c.pub("dur.js", 1)
                assert not r["ok"] and r["error"]["code"] == 503, r
                assert (await c.sub("eph.js"))["ok"]
                assert (await c.pub("eph.js", "hi"))["ok"]
                m = await c.next_event(("msg",), timeout=5)
                assert m["data"] == "hi"
            finally:
                await c.close()

        time.sleep(2.5)  # several tries of the stream check
        assert g.alive(), "the gateway exited:\n" + g.log()
        assert g.http_get("/healthz")[0] == 200
        assert readyz(g) == 503
        run(before(), 30)
        log = g.log()
        assert log.count("nats_jetstream_unavailable") == 1, log  # once, not per try
        srv.jetstream = True
        srv.restart()  # same port: nats.c reconnects, the check now works
        deadline = time.monotonic() + 30
        while readyz(g) != 200:
            assert time.monotonic() < deadline, "never ready:\n" + g.log()[-3000:]
            time.sleep(0.1)
        assert "nats_stream_ready" in g.log()

        async def after():
            c = await connected(g.url(), "json", name="late", auto_ack=True)
            try:
                assert (await c.sub("dur.js"))["ok"]
                seq = (await c.pub("dur.js", 2))["seq"]
                m = await c.next_event(("msg",), timeout=5)
                assert m["seq"] == seq
            finally:
                await c.close()

        run(after(), 30)
    finally:
        srv.kill()
