"""The servers of a NATS cluster (docs/nats.md#servers): the loop reader
learns the servers a cluster announces (INFO connect_urls), so a gateway
given one URL keeps delivering when that server dies; and it starts on a
random configured server, so the live-message connections of a fleet
spread over the cluster instead of all landing on the first URL. Each
connection's log line names the server it went to."""
import asyncio
import re
import time

from conftest import FAST, http_json, rtgate_pub, wait_ready
from rtclient import Client, run


def wait_until(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


def reader_ports(g):
    """The ports of the servers g's loop reader connected to, in order (its log)."""
    return [int(p) for p in re.findall(r"event=nats_live_connected server=127\.0\.0\.1:(\d+)",
                                       g.log())]


def publish_until_seen(sub, url, channel, ephemeral, timeout=40.0):
    """Publishes with rtgate-pub through `url` until sub receives one (live
    messages sent while the reader reconnects are lost; a durable publish
    fails while JetStream elects a leader). Returns the data seen."""

    async def go():
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            assert time.monotonic() < deadline, "nothing reached %s through %s" % (channel, url)
            i += 1
            data = '"try-%d"' % i
            try:
                rtgate_pub(url, channel, data, ephemeral=ephemeral)
            except AssertionError:  # JetStream without a leader yet
                await asyncio.sleep(0.3)
                continue
            try:
                while True:
                    m = await sub.next_event(("msg",), timeout=1.0)
                    if m["channel"] == channel and m["data"] == "try-%d" % i:
                        return m["data"]
            except asyncio.TimeoutError:
                pass
    return go


def test_reader_moves_to_an_announced_server_when_its_own_dies(nats_cluster, gateway):
    n1, n2, n3 = nats_cluster
    g = gateway("--nats", n1.url, "--nats-replicas", "3", "--ephemeral", "eph.>", *FAST)
    wait_ready(g)
    assert reader_ports(g) == [n1.port]
    assert "event=nats_live_servers servers=3 announced_new=2" in g.log(), g.log()

    async def go():
        s = Client(g.url(), "json")
        await s.open()
        await s.connect()
        try:
            assert (await s.sub("eph.c"))["ok"] is True
            assert (await s.sub("dur.c"))["ok"] is True
            await publish_until_seen(s, n2.url, "eph.c", True)()
            await publish_until_seen(s, n2.url, "dur.c", False)()
            n1.kill()
            wait_until(lambda: len(reader_ports(g)) >= 2, what="the reader to reconnect")
            assert reader_ports(g)[-1] in (n2.port, n3.port)
            assert re.search(r"nats_live_connected server=127\.0\.0\.1:\d+ tls=no announced=yes",
                             g.log()), g.log()
            # It keeps delivering, ephemeral and durable, published through the others.
            await publish_until_seen(s, n3.url, "eph.c", True)()
            await publish_until_seen(s, n2.url, "dur.c", False)()
        finally:
            await s.close()
    run(go(), timeout=180)
    # nats.c's connection moved too, and says where to (host:port, not the URL list).
    moved = r"event=nats_connected server=127\.0\.0\.1:(%d|%d)" % (n2.port, n3.port)
    wait_until(lambda: re.search(moved, g.log()), what="nats_connected to another server")


def test_reader_connections_spread_over_the_cluster(nats_cluster, gateway):
    """12 gateways given the same 3 URLs in the same order: their readers land
    on more than one server (all on one by chance: 3^-11). Started one after
    the other, so that one creates the stream and the others find it."""
    urls = ",".join(s.url for s in nats_cluster)
    gws = []
    for _ in range(12):
        gws.append(gateway("--nats", urls, "--nats-replicas", "3", "--ephemeral", "eph.>",
                           *FAST))
        wait_ready(gws[-1])

    def readers_by_server():
        out = {}
        for s in nats_cluster:
            _, body = http_json(s.mon_port, "/connz?limit=1024")
            out[s.port] = sorted(c["name"] for c in body.get("connections") or []
                                 if (c.get("name") or "").startswith("rtgate-live test-"))
        return out

    wait_until(lambda: sum(len(v) for v in readers_by_server().values()) == 12,
               what="12 reader connections")
    by_server = readers_by_server()
    assert sum(1 for names in by_server.values() if names) >= 2, by_server
    # Each worker's log line names the server /connz shows its reader on.
    logged = []
    for g in gws:
        logged += reader_ports(g)
    assert sorted(logged) == sorted(p for p, names in by_server.items() for _ in names), \
        (logged, by_server)
