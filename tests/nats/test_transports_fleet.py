"""The HTTP transports across a fleet, no sticky sessions: two gateways on
one nats-server sharing --session-secret; a session's stream (or its first
poll) on one node, its POSTs and polls on the other, relayed over NATS
(gateway/relay.c); a node's death, and the stream's reconnect on the node
left, resumed by its Last-Event-ID with nothing lost or repeated."""
import asyncio
import os

from httpclient import HttpClient
from rtclient import Client, run


def secret_file(tmp_path):
    p = tmp_path / "session.secret"
    p.write_bytes(os.urandom(48).hex().encode() + b"\n")
    return str(p)


def test_stream_on_one_node_requests_on_the_other(nats, nodes, tmp_path):
    secret = secret_file(tmp_path)
    a, b = nodes(nats.url, 2, "--session-secret", secret)

    async def go():
        s = HttpClient(a.url(), "sse", auto_ack=True, post_to=b.url(), name="sse-a-posts-b")
        await s.connect()
        assert s.connected["node"] == a.node_id
        r = await s.sub("fleet.sse")  # POSTed to b, relayed to a; the reply on a's stream
        assert r["ok"] and r["durable"]
        async with Client(b.url(), "json") as p:
            await p.connect()
            sent = []
            for i in range(20):
                sent.append((await p.pub("fleet.sse", {"i": i}))["seq"])
                if i % 5 == 0:  # the session's own publishes, through b too
                    assert (await s.pub("fleet.sse", {"own": i}))["ok"]
            got = await s.collect(24, timeout=20)
            assert [m["data"].get("i") for m in got if "i" in m["data"]] == list(range(20))
            seqs = [m["seq"] for m in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            assert await s.quiet(0.3) == []
        m = b.metrics()
        assert m['rtgate_connections{transport="sse"}'] == 0, "b holds no session: it relayed"
        assert a.metrics()['rtgate_connections{transport="sse"}'] == 1
        await s.close()
    run(go())


def test_long_poll_polls_and_posts_on_either_node(nats, nodes, tmp_path):
    secret = secret_file(tmp_path)
    a, b = nodes(nats.url, 2, "--session-secret", secret, "--poll-hold-ms", "1000")

    async def go():
        lp = HttpClient(a.url(), "longpoll", auto_ack=True, post_to=b.url(), poll_to=b.url())
        await lp.connect()
        assert lp.connected["node"] == a.node_id
        assert (await lp.sub("fleet.lp"))["ok"]
        async with Client(a.url(), "msgpack") as p:
            await p.connect()
            for i in range(30):
                await p.pub("fleet.lp", i)
            got = await lp.collect(30, timeout=20)
            assert [m["data"] for m in got] == list(range(30))
        # Held on a for a poll that came to b: an empty answer after the hold, same batch.
        n = lp.batches[-1]
        await asyncio.sleep(1.5)
        assert lp.batches[-1] == n and not lp.violations
        assert b.metrics()['rtgate_connections{transport="longpoll"}'] == 0
        await lp.close()
    run(go())


def test_tokens_without_a_shared_secret_stay_on_their_node(nats, nodes):
    a, b = nodes(nats.url, 2)  # each its own random key

    async def go():
        s = HttpClient(a.url(), "sse", post_to=b.url())
        await s.connect()
        assert await s._post(b'{"type":"ping"}') == 401, "b cannot check a's token"
        assert "session_key_local" in a.log()
        s._posts.close()
        s.post_addr = ("127.0.0.1", a.port)
        s._posts = type(s._posts)("127.0.0.1", a.port)
        s._seq = 0
        await s.ping()
        assert (await s.next_event(("pong",)))["type"] == "pong"
        await s.close()
    run(go())


def test_node_dies_stream_reconnects_to_the_other_with_nothing_lost(nats, nodes, tmp_path):
    secret = secret_file(tmp_path)
    a, b = nodes(nats.url, 2, "--session-secret", secret)
    a.expected_rc = -9

    async def go():
        s = HttpClient(a.url(), "sse", channels=["fleet.die"], post_to=b.url())
        await s.connect()
        async with Client(b.url(), "json") as p:
            await p.connect()
            for i in range(10):
                await p.pub("fleet.die", i)
            got = await s.collect(10, timeout=10)
            last_id = s.last_event_id
            assert last_id and [m["data"] for m in got] == list(range(10))
            a.proc.kill()
            a.proc.wait(10)
            await s.wait_closed(10)
            # The session's node is gone: a POST for it, relayed, gets 503 with Retry-After.
            assert await s._post(b'{"type":"ping"}') == 503
            for i in range(10, 25):
                await p.pub("fleet.die", i)
            # The EventSource's reconnect lands on b: a new session, resumed by Last-Event-ID.
            s2 = HttpClient(b.url(), "sse", channels=["fleet.die"], last_event_id=last_id)
            await s2.connect()
            assert s2.connected["node"] == b.node_id
            got = await s2.collect(15, timeout=20)
            assert [m["data"] for m in got] == list(range(10, 25)), "no gap, no duplicate"
            sub = [m for m in s2.all if m.get("type") == "reply" and m.get("id") == 2][0]
            assert sub["recovered"] is True
            await s2.close()
        await s.close(check=False)
    run(go())
