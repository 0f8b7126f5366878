"""The server API for backends (docs/api.md) on the memory engine: the key,
publish (same checks, dedup and replies as a client `pub`, seen by WebSocket
subscribers), channel and presence introspection, node stats, disconnecting
a user, and bad input of every kind. The NATS engine's deferred answers are
in tests/nats/test_api_nats.py."""
import asyncio
import socket
import time

from apiclient import KEY, Api, call, connected, post_bytes, read_responses, write_key
from rtclient import b64, run

FAST = ["--pub-rate", "100000", "--pub-burst", "100000", "--msg-rate", "100000",
        "--msg-burst", "100000"]


def api_gateway(gateway, tmp_path, *flags):
    g = gateway("--api-key-file", write_key(tmp_path), "--ephemeral", "eph.>", *FAST, *flags)
    return g, Api(g.port)


# -- off, the key file and the key -------------------------------------------

def test_without_a_key_file_the_api_is_404(gateway):
    g = gateway()
    api = Api(g.port)
    for method, path in [("GET", "/api/v1/node"), ("POST", "/api/v1/publish"),
                         ("GET", "/api/v1/channels"), ("GET", "/api")]:
        status, _, body = api.request(method, path, body={} if method == "POST" else None)
        assert status == 404, (method, path, status, body)
    assert g.http_get("/healthz")[0] == 200  # the connection handling is unharmed


def test_bad_key_files_stop_the_start_without_showing_the_key(tmp_path):
    import importlib.util
    import os
    import subprocess
    # This directory's conftest, whichever one "conftest" names in this run.
    spec = importlib.util.spec_from_file_location(
        "rtgate_api_conftest", os.path.join(os.path.dirname(__file__), "conftest.py"))
    it = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(it)
    free_port, rtgate_bin = it.free_port, it.rtgate_bin
    secret = "short-secret"
    cases = {"missing": str(tmp_path / "nope"),
             "short": write_key(tmp_path, secret, "short.key"),
             "two words": write_key(tmp_path, "abcdefghijklmnop qrstuvwxyz", "sp.key")}
    for what, path in cases.items():
        r = subprocess.run([rtgate_bin(), "--listen", "127.0.0.1:%d" % free_port(),
                            "--api-key-file", path], capture_output=True, timeout=30)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode != 0, what
        assert "api_key_file" in out, (what, out)
        assert secret not in out and "qrstuvwxyz" not in out, out


def test_key_is_required_and_checked(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path, "--log-level", "debug",
                         "--api-auth-fail-burst", "1000")
    wrong = [None, "", KEY[:-1], KEY + "x", KEY.upper(), "x" * len(KEY), "x" * 2000]
    for key in wrong:
        status, hdrs, body = api.get("/api/v1/node", key=key)
        assert status == 401, (key, status, body)
        assert hdrs.get("www-authenticate", "").startswith("Bearer")
        assert body["ok"] is False and body["error"]["code"] == 401
        assert body["error"]["reason"] == "unauthorized"
    # Not a Bearer token, or the key in another scheme.
    for auth in ["Basic " + b64(("api:" + KEY).encode()), KEY, "Bearer", "Token " + KEY]:
        status, _, _ = api.get("/api/v1/node", key=None, headers={"Authorization": auth})
        assert status == 401, auth
    # Unknown paths and wrong methods are 401 too without the key: nothing is learnt.
    assert api.get("/api/v1/nothing", key="wrong")[0] == 401
    assert api.request("DELETE", "/api/v1/publish", key="wrong")[0] == 401
    # The right key, with blanks around it and the scheme in any case.
    status, _, body = api.get("/api/v1/node", key=None,
                              headers={"Authorization": "bEaReR   %s  " % KEY})
    assert status == 200 and body["ok"] is True
    assert body["api"]["failed_keys"] == len(wrong) + 6
    m = g.metrics()
    assert m["rtgate_api_failed_keys_total"] == len(wrong) + 6
    assert m["rtgate_api_requests_total"] == len(wrong) + 7 and m["rtgate_api_in_progress"] == 0
    log = g.log()
    assert "api_auth_failed" in log
    assert KEY not in log and KEY[:-1] not in log and "x" * 50 not in log


def test_failed_keys_from_one_address_get_429_even_with_the_right_key(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path, "--api-auth-fail-burst", "3",
                         "--api-auth-fail-rate", "1")
    # Three failures empty the bucket; a token comes back each second, so the
    # check below means something only if it ran within a second of the
    # first failure: on a slow machine, try again.
    for attempt in range(5):
        t0 = time.monotonic()
        statuses = [api.get("/api/v1/node", key="guess-%d" % i)[0] for i in range(3)]
        status, hdrs, body = api.get("/api/v1/node")  # the right key
        if time.monotonic() - t0 < 0.9:
            break
        time.sleep(3.5)  # full again
    else:
        raise AssertionError("the machine never did 4 requests within 0.9 s")
    assert statuses[0] == 401 and all(x in (401, 429) for x in statuses), statuses
    assert status == 429, (status, body)
    assert int(hdrs["retry-after"]) >= 1
    assert body["error"]["code"] == 429 and body["error"]["retry_after_ms"] > 0
    assert api.post("/api/v1/publish", {"channel": "a", "data": 1}, key="guess")[0] == 429
    # Later a token is back: the right key works again.
    deadline = time.monotonic() + 10
    while api.get("/api/v1/node")[0] == 429:
        assert time.monotonic() < deadline, "the address stayed blocked"
        time.sleep(0.2)

    # WebSocket clients from the same address are not affected by the API's limit.
    async def go():
        c = await connected(g)
        await c.close()
    run(go())


# -- publish ------------------------------------------------------------------

def test_publish_reaches_websocket_subscribers(gateway, tmp_path, codec):
    g, api = api_gateway(gateway, tmp_path)

    async def go():
        sub = await connected(g, codec)
        r = await sub.sub("chat.room1")
        assert r["ok"] and r["durable"]
        await sub.sub("eph.news")
        rep = await call(api.publish, "chat.room1", {"text": "hi", "n": [1, 2.5]}, msg_id="m-1")
        assert rep == {"ok": True, "seq": 1, "dup": False}
        m = await sub.next_event(("msg",))
        assert m["channel"] == "chat.room1" and m["seq"] == 1 and m["msg_id"] == "m-1"
        assert m["data"] == {"text": "hi", "n": [1, 2.5]} and m["ts"] > 0
        # Binary data: data_b64 in, data_b64 (JSON) or bin (msgpack) out.
        rep = await call(api.publish, "chat.room1", data_b64=b64(b"\x00\x01\xff"))
        assert rep == {"ok": True, "seq": 2, "dup": False}
        m = await sub.next_event(("msg",))
        if codec == "json":
            assert m["data_b64"] == b64(b"\x00\x01\xff")
        else:
            assert m["data"] == b"\x00\x01\xff"
        # Ephemeral: no seq in the reply or the message.
        rep = await call(api.publish, "eph.news", "flash")
        assert rep == {"ok": True, "dup": False}
        m = await sub.next_event(("msg",))
        assert m["channel"] == "eph.news" and "seq" not in m and m["data"] == "flash"
        await sub.close()
    run(go())


def test_msg_id_dedup_is_shared_by_api_and_websocket_publishes(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path)

    async def go():
        sub = await connected(g)
        await sub.sub("orders")
        pubc = await connected(g)
        # WebSocket first, then the API with the same msg_id: the original seq, dup.
        r = await pubc.pub("orders", {"o": 1}, msg_id="order-1")
        assert r["ok"] and r["seq"] == 1 and r["dup"] is False
        rep = await call(api.publish, "orders", {"o": 1}, msg_id="order-1")
        assert rep == {"ok": True, "seq": 1, "dup": True}
        # The API first, then WebSocket.
        rep = await call(api.publish, "orders", {"o": 2}, msg_id="order-2")
        assert rep == {"ok": True, "seq": 2, "dup": False}
        r = await pubc.pub("orders", {"o": 2}, msg_id="order-2")
        assert r["ok"] and r["seq"] == 2 and r["dup"] is True
        # Ephemeral channels dedup too.
        assert (await call(api.publish, "eph.x", 1, msg_id="e1"))["dup"] is False
        r = await pubc.pub("eph.x", 1, msg_id="e1")
        assert r["ok"] and r["dup"] is True
        got = await sub.collect(2)
        assert [m["seq"] for m in got] == [1, 2]
        assert await sub.quiet(0.5) == []  # each message once
        await sub.close()
        await pubc.close()
    run(go())


def test_batch_publish_answers_each_message_in_order(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path)

    async def go():
        sub = await connected(g)
        await sub.sub("b")
        msgs = [{"channel": "b", "data": i, "msg_id": "m%d" % i} for i in range(5)]
        msgs.append({"channel": "b", "data": 0, "msg_id": "m0"})  # a dup inside the batch
        msgs.append({"channel": "bad..name", "data": 1})
        msgs.append({"channel": "b"})
        msgs.append(["not", "an", "object"])
        msgs.append({"channel": "b", "data": 1, "data_b64": "AA=="})
        status, _, r = await call(api.post, "/api/v1/publish", {"messages": msgs})
        assert status == 200 and r["ok"] is True
        res = r["results"]
        assert len(res) == len(msgs)
        assert [x.get("seq") for x in res[:6]] == [1, 2, 3, 4, 5, 1]
        assert [x["dup"] for x in res[:6]] == [False] * 5 + [True]
        for x in res[6:]:
            assert x["ok"] is False and x["error"]["code"] == 400, x
        got = await sub.collect(5)
        assert [m["data"] for m in got] == [0, 1, 2, 3, 4]
        await sub.close()
    run(go())


def test_publish_errors_have_the_client_codes(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path, "--max-message-bytes", "1024",
                         "--api-max-body-bytes", "4096")

    def err(status, body, code):
        assert status == code, (status, body)
        assert body["ok"] is False and body["error"]["code"] == code, body

    # The checks of a client pub, with the same codes and reasons.
    for bad in [{"channel": "a..b", "data": 1}, {"channel": "", "data": 1}, {"data": 1},
                {"channel": "a"}, {"channel": "a", "data": 1, "data_b64": "AA=="},
                {"channel": "a", "data_b64": "***"}, {"channel": "a", "data": 1, "msg_id": ""},
                {"channel": "a", "data": 1, "msg_id": "x" * 65}, {"channel": 5, "data": 1},
                {"channel": "x" * 129, "data": 1}, {"messages": []},
                {"messages": [{"channel": "a", "data": 1}] * 101}, {"messages": {}}]:
        status, _, body = api.post("/api/v1/publish", bad)
        err(status, body, 400)
        assert body["error"]["reason"] == "bad_request"
    # Not JSON, not an object, a duplicate key, trailing bytes, invalid UTF-8.
    for raw in [b"", b"nope", b"[1,2]", b'"str"', b'{"channel":"a","data":1,"data":2}',
                b'{"channel":"a","data":1} x', b'{"channel":"a","data":"\xff"}']:
        status, _, body = api.post("/api/v1/publish", raw)
        err(status, body, 400)
    # One message over --max-message-bytes: 413, as a client frame would be refused.
    status, _, body = api.post("/api/v1/publish", {"channel": "a", "data": "x" * 2000})
    err(status, body, 413)
    # A body over --api-max-body-bytes: 413 before it is read, and the connection ends.
    status, hdrs, body = api.post("/api/v1/publish", {"channel": "a", "data": "x" * 5000})
    err(status, body, 413)
    assert hdrs.get("connection") == "close"
    # The node is fine: a good publish still works.
    assert api.publish("a", 1)["ok"] is True


def test_api_publish_rate_gives_429_with_retry_after(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path, "--api-pub-rate", "1", "--api-pub-burst", "3")
    msgs = [{"channel": "r", "data": i} for i in range(5)]
    # A token comes back each second: the single publish must follow the
    # batch within a second to meet an empty bucket (a slow machine retries).
    for attempt in range(5):
        t0 = time.monotonic()
        status, _, r = api.post("/api/v1/publish", {"messages": msgs})
        single = api.post("/api/v1/publish", {"channel": "r", "data": 9})
        if time.monotonic() - t0 < 0.9:
            break
        time.sleep(3.5)  # full again
    else:
        raise AssertionError("the machine never did 2 requests within 0.9 s")
    assert status == 200
    codes = [x["error"]["code"] if not x["ok"] else 200 for x in r["results"]]
    assert codes == [200, 200, 200, 429, 429], codes
    assert r["results"][3]["error"]["retry_after_ms"] > 0
    status, hdrs, body = single
    assert status == 429 and int(hdrs["retry-after"]) >= 1, (status, body)
    assert body["error"]["reason"] == "rate_limited" and body["error"]["retry_after_ms"] > 0


def test_http_errors_for_paths_methods_and_bodies(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path)
    status, _, body = api.get("/api/v1/nothing")
    assert status == 404 and body["error"]["code"] == 404
    assert api.get("/api/v2/publish")[0] == 404
    status, hdrs, body = api.get("/api/v1/publish")
    assert status == 405 and hdrs["allow"] == "POST", (status, hdrs)
    assert body["error"]["reason"] == "method_not_allowed"
    status, hdrs, _ = api.post("/api/v1/node", {})
    assert status == 405 and hdrs["allow"] == "GET"
    for method in ["PUT", "DELETE", "PATCH"]:
        assert api.request(method, "/api/v1/publish", body="{}")[0] == 405, method
    # POST without Content-Length (http.client always sends one): 411.
    auth = "Authorization: Bearer %s\r\n" % KEY
    r = api.raw(("POST /api/v1/publish HTTP/1.1\r\nHost: x\r\n%s"
                 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % auth).encode())
    assert r is not None and r[0] == 411, r
    # Keep-alive: several requests on one connection.
    c = api.conn()
    try:
        for i in range(5):
            status, _, body = api.post("/api/v1/publish", {"channel": "k", "data": i}, conn=c)
            assert status == 200 and body["seq"] == i + 1
            assert api.get("/api/v1/node", conn=c)[0] == 200
    finally:
        c.close()


def test_pipelined_requests_with_bodies_never_hang_the_gateway(gateway, tmp_path):
    """lws 4.1 loops forever (100% CPU, deaf even to SIGTERM) on a request
    body followed by a pipelined request in the same packet: one packet from
    anyone hung the gateway. A request with a body now ends its connection
    with its answer (Connection: close); what was pipelined behind it is
    not handled, as HTTP allows."""
    g, api = api_gateway(gateway, tmp_path)
    post_health = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    get_health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    get_node = (b"GET /api/v1/node HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                % KEY.encode())
    pub = post_bytes("/api/v1/publish", {"channel": "pp", "data": 1})
    for packet, first in [(post_health * 3, 200), (get_health + post_health * 2, 200),
                          (pub * 3, 200), (get_node + pub + get_node, 200),
                          (post_health + pub + pub, 200)]:
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        try:
            s.sendall(packet)
            got = read_responses(s, 4, timeout=10)
        finally:
            s.close()
        assert got[0] is not None and got[0][0] == first, (packet, got)
        # Whatever came back, the gateway is alive for everybody else.
        assert g.http_get("/healthz", timeout=5)[0] == 200, packet
    # A POST pipelined behind a GET is not taken for something else.
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    try:
        s.sendall(get_node + pub)
        got = read_responses(s, 2, timeout=10)
    finally:
        s.close()
    assert got[0][0] == 200
    assert got[1] is None or got[1][0] in (200, 400), got
    if got[1] is not None and got[1][0] == 400:
        assert "pipelined" in got[1][2]["error"]["message"], got
    status, _, node = api.get("/api/v1/node")
    assert status == 200 and node["api"]["in_progress"] == 0


def test_pipelined_bodies_to_static_files_never_hang_the_gateway(gateway, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>hi</html>")
    g = gateway("--static", str(site))
    post = b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    get = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
    for packet in [post * 3, get + post * 2, post + get]:
        s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
        try:
            s.sendall(packet)
            got = read_responses(s, 3, timeout=10)
        finally:
            s.close()
        assert got[0] is not None and got[0][0] in (200, 405), (packet, got)
        assert g.http_get("/healthz", timeout=5)[0] == 200, packet


def test_a_stalled_body_blocks_nobody(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path)

    async def go():
        sub = await connected(g)
        await sub.sub("live")
        # A request that announces 1000 bytes and sends 10, then stalls.
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        s.sendall(("POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: 1000\r\n\r\n{\"channel\"" % KEY).encode())
        try:
            for i in range(20):
                rep = await call(api.publish, "live", i)
                assert rep["ok"]
                m = await sub.next_event(("msg",))
                assert m["data"] == i
            status, _, node = await call(api.get, "/api/v1/node")
            assert node["api"]["in_progress"] == 1  # the stalled one
        finally:
            s.close()
        deadline = time.monotonic() + 10
        while (await call(api.get, "/api/v1/node"))[2]["api"]["in_progress"] != 0:
            assert time.monotonic() < deadline, "the abandoned request was never freed"
            await asyncio.sleep(0.1)
        await sub.close()
    run(go())


# -- introspection --------------------------------------------------------------

def test_channels_list_pages_and_one_channel(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path)

    async def go():
        a, b = await connected(g), await connected(g)
        names = ["room.%02d" % i for i in range(7)]
        for n in names:
            await a.sub(n)
        await b.sub("room.03")
        r = await b.sub("room.05")
        epoch = r["epoch"]
        await a.sub("eph.tick")
        await b.sub("other")
        await call(api.publish, "room.05", 1)
        await call(api.publish, "room.05", 2)

        seen, after = [], None
        for page in range(10):
            q = "/api/v1/channels?prefix=room.&limit=3" + ("&after=" + after if after else "")
            status, _, body = await call(api.get, q)
            assert status == 200 and body["ok"], body
            seen += body["channels"]
            if not body["more"]:
                assert "next" not in body
                break
            assert len(body["channels"]) == 3
            after = body["next"]
        assert [c["channel"] for c in seen] == names
        subs = {c["channel"]: c["subscribers"] for c in seen}
        assert subs["room.03"] == 2 and subs["room.05"] == 2 and subs["room.00"] == 1
        assert all(c["durable"] for c in seen)
        status, _, body = await call(api.get, "/api/v1/channels")
        assert [c["channel"] for c in body["channels"]] == ["eph.tick", "other"] + names
        assert body["total"] == 9
        assert body["channels"][0]["durable"] is False

        status, _, body = await call(api.get, "/api/v1/channels/room.05")
        assert body == {"ok": True, "channel": "room.05", "durable": True, "active": True,
                        "subscribers": 2, "seq": 2, "oldest": 1, "epoch": epoch}, body
        _, _, body = await call(api.get, "/api/v1/channels/eph.tick")
        assert body["active"] and not body["durable"] and "seq" not in body
        _, _, body = await call(api.get, "/api/v1/channels/never.used")
        assert body == {"ok": True, "channel": "never.used", "durable": True, "active": False,
                        "subscribers": 0}
        await b.close()
        await asyncio.sleep(0.2)
        _, _, body = await call(api.get, "/api/v1/channels/room.05")
        assert body["subscribers"] == 1
        for bad in ["/api/v1/channels/a..b", "/api/v1/channels?limit=0",
                    "/api/v1/channels?limit=1001", "/api/v1/channels?limit=x",
                    "/api/v1/channels?prefix=a%20b", "/api/v1/channels?after=" + "a" * 200]:
            status, _, body = await call(api.get, bad)
            assert status == 400, (bad, body)
        await a.close()
    run(go())


def test_presence_near_and_space_listing(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path)
    berlin = (52.5200, 13.4050)

    async def go():
        cs = [await connected(g) for _ in range(3)]
        for i, c in enumerate(cs):
            r = await c.request("geo.set", space="drivers", lat=berlin[0] + i * 0.001,
                                lon=berlin[1], meta={"car": i})
            assert r["ok"]
        q = "/api/v1/presence?space=drivers&lat=%f&lon=%f&radius_m=150" % berlin
        status, _, body = await call(api.get, q)
        assert status == 200, body
        members = body["members"]
        assert [m["client"] for m in members] == [cs[0].connected["client"],
                                                  cs[1].connected["client"]]
        assert members[0]["dist_m"] == 0 and 100 < members[1]["dist_m"] < 120
        assert members[1]["meta"] == {"car": 1} and members[1]["local"] is True
        assert members[0]["user"] == cs[0].connected["user"]
        status, _, body = await call(api.get, "/api/v1/presence?space=drivers&limit=2")
        assert len(body["members"]) == 2 and body["truncated"] is True
        status, _, body = await call(api.get, "/api/v1/presence?space=drivers")
        assert len(body["members"]) == 3 and body["truncated"] is False
        assert "dist_m" not in body["members"][0]
        status, _, body = await call(api.get, "/api/v1/presence?space=drivers&cell=u33d")
        assert len(body["members"]) == 3
        status, _, body = await call(api.get, "/api/v1/presence?space=drivers&cell=s")
        assert body["members"] == []
        _, _, body = await call(api.get, "/api/v1/presence?space=riders")
        assert body["members"] == []
        for bad in ["", "?space=", "?space=a%20b", "?space=d&lat=1", "?space=d&lat=1&lon=2",
                    "?space=d&lat=91&lon=0&radius_m=1", "?space=d&lat=1&lon=2&radius_m=50001",
                    "?space=d&lat=x&lon=2&radius_m=5", "?space=d&lat=nan&lon=2&radius_m=5",
                    "?space=d&cell=aaaa", "?space=d&cell=" + "u" * 13, "?space=d&limit=0"]:
            status, _, body = await call(api.get, "/api/v1/presence" + bad)
            assert status == 400, (bad, body)
        for c in cs:
            await c.close()
    run(go())


def test_node_stats(gateway, tmp_path):
    g, api = api_gateway(gateway, tmp_path)

    async def go():
        cs = [await connected(g) for _ in range(3)]
        await cs[0].sub("s")
        await call(api.publish, "s", 1)
        _, _, body = await call(api.get, "/api/v1/node")
        assert body["node"] == g.node_id and body["engine"] == "memory"
        assert body["ready"] is True and body["draining"] is False
        assert body["connections"] == 3 and body["subscriptions"] == 1
        assert body["published"] == 1 and body["deliveries"] == 1
        for c in cs:
            await c.close()
    run(go())


# -- disconnect -----------------------------------------------------------------

def test_disconnect_by_client_and_by_user(gateway, tmp_path, codec):
    g, api = api_gateway(gateway, tmp_path)

    async def go():
        a, b, c = await connected(g, codec), await connected(g, codec), await connected(g, codec)
        await c.sub("still")
        status, _, body = await call(api.post, "/api/v1/disconnect",
                                     {"client": a.connected["client"]})
        assert status == 200 and body == {"ok": True, "disconnected": 1}
        d = await a.expect_disconnect(4003)
        assert d["reconnect"] is False
        # By user, asking it to come back: 1000 and reconnect:true.
        status, _, body = await call(api.post, "/api/v1/disconnect",
                                     {"user": b.connected["user"], "reconnect": True})
        assert body == {"ok": True, "disconnected": 1}
        d = await b.expect_disconnect(1000)
        assert d["reconnect"] is True
        # Nobody by that name: 0. The others are untouched.
        _, _, body = await call(api.post, "/api/v1/disconnect", {"user": "nobody"})
        assert body["disconnected"] == 0
        await call(api.publish, "still", "here")
        assert (await c.next_event(("msg",)))["data"] == "here"
        for bad in [{}, {"user": "a", "client": "b"}, {"user": 5}, {"user": ""},
                    {"client": "c", "reconnect": "yes"}, {"user": "x" * 513}]:
            status, _, body = await call(api.post, "/api/v1/disconnect", bad)
            assert status == 400, (bad, body)
        await c.close()
        await a.close(check=False)
        await b.close(check=False)
    run(go())


def test_disconnect_by_token_user_reaches_every_connection_of_that_user(gateway, tmp_path):
    from tokens import KeySet
    from rtclient import Client
    keys = KeySet(tmp_path)
    g, api = api_gateway(gateway, tmp_path, *keys.flags("HS256", "--sub-allow", ">",
                                                        "--pub-allow", ">"))

    async def go():
        conns = []
        for sub in ("u42", "u42", "u7"):
            c = Client(g.url(), "json")
            await c.open()
            r = await c.connect(token=keys.token("HS256", sub=sub))
            assert r["type"] == "connected" and r["user"] == sub, r
            conns.append(c)
        status, _, body = await call(api.post, "/api/v1/disconnect", {"user": "u42"})
        assert status == 200 and body == {"ok": True, "disconnected": 2}, body
        for c in conns[:2]:
            await c.expect_disconnect(4003)
        await conns[2].sub("still")
        await call(api.publish, "still", 1)
        assert (await conns[2].next_event(("msg",)))["data"] == 1
        await conns[2].close()
        for c in conns[:2]:
            await c.close(check=False)
    run(go())


def test_failed_keys_count_per_client_address_behind_a_trusted_proxy(gateway, tmp_path):
    """Behind a load balancer every request comes from its address: with
    --trusted-proxy the limit keys on the forwarded client instead, so one
    client guessing keys does not lock the others out."""
    g, api = api_gateway(gateway, tmp_path, "--trusted-proxy", "127.0.0.1",
                         "--api-auth-fail-burst", "2", "--api-auth-fail-rate", "1")
    guesser = {"X-Forwarded-For": "203.0.113.5"}
    other = {"X-Forwarded-For": "203.0.113.6"}
    for attempt in range(5):
        t0 = time.monotonic()
        for i in range(2):
            api.get("/api/v1/node", key="guess-%d" % i, headers=guesser)
        blocked = api.get("/api/v1/node", headers=guesser)[0]
        fine = api.get("/api/v1/node", headers=other)[0]
        if time.monotonic() - t0 < 0.9:
            break
        time.sleep(2.5)
    else:
        raise AssertionError("the machine never did 4 requests within 0.9 s")
    assert blocked == 429 and fine == 200, (blocked, fine)
    assert "peer=203.0.113.5" in g.log()
