"""
The HTTP transports through the recipe (docker/local-fleet.sh: haproxy in
front, no sticky sessions): the gateways share the session secret of
rtgate.env, so a session's stream on one node takes its requests through the
other node, and a stream opened through haproxy takes its requests through
haproxy, wherever it sends them. Without the shared secret the other node
answers 401 (tests/nats/test_transports_fleet.py shows that part).
"""
import asyncio
import os
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from httpclient import HttpClient  # noqa: E402
from rtclient import Client, run  # noqa: E402


def haproxy_url(fleet):
    u = urllib.parse.urlparse(fleet.env["WS_URL"])
    return "http://%s:%d" % (u.hostname, u.port)


def test_stream_on_node_1_requests_through_node_2(fleet):
    one, two = fleet.gateway_url(1), fleet.gateway_url(2)

    async def go():
        s = HttpClient(one, "sse", auto_ack=True, post_to=two, name="sse-1-posts-2")
        await s.connect()
        assert s.connected["node"] == fleet.node_id(1)
        r = await s.sub("recipe.sse")  # POSTed to node 2, relayed to node 1
        assert r["ok"] and r["durable"], r
        for i in range(10):
            assert (await s.pub("recipe.sse", {"i": i}, msg_id="m%d" % i))["ok"]
        got = await s.collect(10, timeout=20)
        assert [m["data"]["i"] for m in got] == list(range(10))
        assert await s.quiet(0.3) == []
        assert fleet.metrics(2)['rtgate_connections{transport="sse"}'] == 0, "node 2 relayed"
        await s.close()
    run(go())


def test_long_poll_through_haproxy_with_a_websocket_publisher(fleet):
    lb = haproxy_url(fleet)

    async def go():
        lp = HttpClient(lb, "longpoll", auto_ack=True, name="longpoll-via-haproxy")
        await lp.connect()
        assert (await lp.sub("recipe.lp"))["ok"]
        async with Client(fleet.env["WS_URL"], "json") as p:
            await p.connect()
            for i in range(20):
                assert (await p.pub("recipe.lp", i))["ok"]
        got = await lp.collect(20, timeout=20)
        assert [m["data"] for m in got] == list(range(20))
        seqs = [m["seq"] for m in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 20
        # A publish retried with its msg_id, each POST free to land on either node: stored once.
        first = await lp.pub("recipe.lp", "once", msg_id="retry-1")
        again = await lp.pub("recipe.lp", "once", msg_id="retry-1")
        assert first["ok"] and again["ok"] and again["seq"] == first["seq"], (first, again)
        got = await lp.collect(1, timeout=10)
        assert got[0]["data"] == "once" and got[0]["seq"] == first["seq"]
        assert await lp.quiet(0.5) == [], "the retry was not delivered again"
        await lp.close()
    run(go())
