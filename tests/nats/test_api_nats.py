"""The server API on the NATS engine (docs/api.md): a durable publish is
answered only once JetStream has stored it, so the HTTP answer is deferred;
msg_id dedup spans the API, WebSocket clients and other nodes; a client that
hangs up before the answer costs nothing and breaks nothing."""
import asyncio
import os
import signal
import socket
import threading
import time

from apiclient import KEY, Api, call, connected, post_bytes, read_responses, write_key
from conftest import FAST, rtgate_pub
from rtclient import run


def api_nodes(nats, gateway, tmp_path, n=1):
    key = write_key(tmp_path)
    gs = [gateway("--nats", nats.url, "--ephemeral", "eph.>", "--api-key-file", key, *FAST)
          for _ in range(n)]
    return gs, [Api(g.port) for g in gs]


def ready(api, timeout=20.0):
    """Waits until the node's engine is up (the stream checked)."""
    deadline = time.monotonic() + timeout
    while True:
        _, _, body = api.get("/api/v1/node")
        if body.get("ready"):
            return
        assert time.monotonic() < deadline, "the node never became ready: %r" % body
        time.sleep(0.1)


def test_durable_publish_is_answered_after_jetstream_and_dedups_across_nodes(nats, gateway,
                                                                             tmp_path):
    (a, b), (api_a, api_b) = api_nodes(nats, gateway, tmp_path, 2)
    ready(api_a)
    ready(api_b)

    async def go():
        sub = await connected(b)
        await sub.sub("orders")
        rep = await call(api_a.publish, "orders", {"o": 1}, msg_id="o-1")
        assert rep["ok"] and rep["dup"] is False and rep["seq"] >= 1
        seq = rep["seq"]
        m = await sub.next_event(("msg",), timeout=10)
        assert m["seq"] == seq and m["msg_id"] == "o-1" and m["data"] == {"o": 1}
        # The same msg_id through the other node's API, a WebSocket client and
        # rtgate-pub: all answered with the original seq, nothing delivered again.
        assert await call(api_b.publish, "orders", {"o": 1}, msg_id="o-1") == \
            {"ok": True, "seq": seq, "dup": True}
        pubc = await connected(a)
        r = await pubc.pub("orders", {"o": 1}, msg_id="o-1", timeout=10)
        assert r["ok"] and r["seq"] == seq and r["dup"] is True
        assert rtgate_pub(nats.url, "orders", '{"o":1}', msg_id="o-1")["seq"] == seq
        # A batch: every message stored in order.
        msgs = [{"channel": "orders", "data": i, "msg_id": "b-%d" % i} for i in range(10)]
        status, _, body = await call(api_a.post, "/api/v1/publish", {"messages": msgs})
        assert status == 200 and all(x["ok"] for x in body["results"]), body
        seqs = [x["seq"] for x in body["results"]]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10 and seqs[0] > seq
        got = await sub.collect(10, timeout=10)
        assert [m["data"] for m in got] == list(range(10))
        assert await sub.quiet(0.5) == []
        await sub.close()
        await pubc.close()
    run(go())


def test_the_answer_waits_for_the_store_and_a_client_that_hangs_up_is_forgotten(
        nats, gateway, tmp_path):
    (g,), (api,) = api_nodes(nats, gateway, tmp_path)
    ready(api)

    async def go():
        sub = await connected(g)
        await sub.sub("held")
        # JetStream frozen: the publish is handed over but not acknowledged.
        os.kill(nats.proc.pid, signal.SIGSTOP)
        try:
            answer = {}

            def publish():
                try:
                    answer["r"] = api.post("/api/v1/publish",
                                           {"channel": "held", "data": 1, "msg_id": "h1"})
                except Exception as e:  # shown by the assertions below
                    answer["exception"] = repr(e)
            t = threading.Thread(target=publish)
            t.start()
            # A second request that hangs up before its answer.
            s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            body = b'{"channel":"held","data":2,"msg_id":"h2"}'
            s.sendall(b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      + KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await asyncio.sleep(1.0)
            assert t.is_alive() and not answer, "answered before JetStream stored it: %r" % answer
            # Other API calls are answered meanwhile: the loop is not blocked.
            _, _, node = await call(api.get, "/api/v1/node")
            assert node["api"]["in_progress"] == 2, node
            s.close()
            await asyncio.sleep(0.3)
        finally:
            os.kill(nats.proc.pid, signal.SIGCONT)
        await call(t.join, 20)
        status, _, rep = answer["r"]
        assert status == 200 and rep["ok"] and rep["dup"] is False, answer
        # Both were stored (the hung-up one too) and delivered once each.
        got = await sub.collect(2, timeout=10)
        assert sorted(m["msg_id"] for m in got) == ["h1", "h2"]
        # The hung-up request is gone once its answer came: nothing left over.
        deadline = time.monotonic() + 10
        while (await call(api.get, "/api/v1/node"))[2]["api"]["in_progress"] != 0:
            assert time.monotonic() < deadline, "a request stayed in progress"
            await asyncio.sleep(0.1)
        # Its retry is a dup of what was stored.
        assert (await call(api.publish, "held", 2, msg_id="h2"))["dup"] is True
        await sub.close()
    run(go())


def test_a_request_sent_before_the_answer_gets_no_wrong_answer(nats, gateway, tmp_path):
    """A client that sends its next request while a publish waits for
    JetStream: lws may read it as more of the first body. The first answer
    is still right; the second is either answered or refused the HTTP way
    (the first answer says `Connection: close` and the connection ends, so
    the client knows to send it again), never answered wrongly."""
    (g,), (api,) = api_nodes(nats, gateway, tmp_path)
    ready(api)
    s = socket.create_connection(("127.0.0.1", g.port), timeout=20)
    os.kill(nats.proc.pid, signal.SIGSTOP)
    try:
        s.sendall(post_bytes("/api/v1/publish", {"channel": "pl", "data": 1, "msg_id": "p1"}))
        time.sleep(0.5)
        s.sendall(b"GET /api/v1/channels/pl HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer %s\r\n\r\n" % KEY.encode())
        time.sleep(0.5)
    finally:
        os.kill(nats.proc.pid, signal.SIGCONT)
    try:
        got = read_responses(s, 2, timeout=20)
    finally:
        s.close()
    first, second = got[0], got[1] if len(got) > 1 else None
    assert first is not None and first[0] == 200, got
    assert first[2]["ok"] and first[2]["dup"] is False and first[2]["seq"] >= 1
    if second is None:
        assert first[1].get("connection") == "close", first
    else:
        assert second[0] == 200 and second[2]["channel"] == "pl", second
    # The publish is stored once; the node goes on answering.
    assert api.publish("pl", 1, msg_id="p1")["dup"] is True


def test_nats_down_gives_503_with_retry_after_then_publishes_resume(nats, gateway, tmp_path):
    (g,), (api,) = api_nodes(nats, gateway, tmp_path)
    ready(api)
    nats.kill()
    deadline = time.monotonic() + 20
    while True:
        status, hdrs, body = api.post("/api/v1/publish", {"channel": "d", "data": 1})
        if status == 503:
            break
        assert time.monotonic() < deadline, (status, body)
        time.sleep(0.2)
    assert int(hdrs["retry-after"]) >= 1
    assert body["error"]["reason"] == "unavailable" and body["error"]["retry_after_ms"] > 0
    _, _, node = api.get("/api/v1/node")
    assert node["ready"] is False
    # NATS back: publishing works again. (It also keeps the gateway from
    # stopping with NATS dead, where nats.c may leak a subscription's close
    # notice that its delivery thread never got to: not the API's doing.)
    nats.start()
    ready(api, 30)
    deadline = time.monotonic() + 20
    while True:
        status, _, body = api.post("/api/v1/publish", {"channel": "d", "data": 2})
        if status == 200:
            break
        assert status == 503 and time.monotonic() < deadline, (status, body)
        time.sleep(0.2)
    assert body["ok"] and body["seq"] >= 1
