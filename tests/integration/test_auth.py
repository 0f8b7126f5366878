"""Tokens and permissions against the real binary (docs/protocol.md,
Authentication): every bad token gets 401 and close 4001 while other
clients' deliveries keep flowing; exp passing mid-session closes 4001 and
`refresh` extends it; sub_allow / pub_allow / geo_allow and the default
policies answer 403; anonymous modes; the user in `connected` and in geo
members; SIGHUP reloads the key; no token, key or payload in the log."""
import asyncio
import os
import signal
import subprocess
import time

import pytest

from conftest import rtgate_bin
from rtclient import Client, open_client, run
from tokens import ALGS, KeySet, bad_tokens

FAST = ["--pub-rate", "10000", "--pub-burst", "10000", "--msg-rate", "10000",
        "--msg-burst", "10000"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeySet(tmp_path_factory.mktemp("keys"))


async def refused(url, codec, token, **fields):
    """Connects with token; asserts 401 then disconnect + close 4001; returns the error."""
    c = Client(url, codec)
    await c.open()
    try:
        if token is not None:
            fields["token"] = token
        r = await c.request("connect", **fields)
        assert r["type"] == "reply" and r["ok"] is False, r
        assert r["error"]["code"] == 401 and r["error"]["reason"] == "unauthorized", r
        d = await c.expect_disconnect(4001)
        return r["error"], d
    finally:
        await c.close()


async def steady_flow(pub, channel, stop, sent):
    """Publishes 1, 2, 3... on channel every few ms until stop is set."""
    n = 0
    while not stop.is_set():
        n += 1
        r = await pub.pub(channel, n)
        assert r["ok"], r
        sent.append(n)
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("alg", ALGS)
def test_every_bad_token_gets_401_and_others_keep_flowing(gateway, keys, alg):
    g = gateway(*keys.flags(alg), "--sub-allow", "flow.>", "--pub-allow", "flow.>", *FAST)

    async def go():
        good = keys.token(alg)
        sub = await open_client(g.url(), "json", connect=False)
        pub = await open_client(g.url(), "msgpack", connect=False)
        await sub.connect(token=good)
        await pub.connect(token=good)
        assert (await sub.sub("flow.x"))["ok"]
        stop, sent = asyncio.Event(), []
        flow = asyncio.ensure_future(steady_flow(pub, "flow.x", stop, sent))

        async def until_sent(n):
            while len(sent) < n:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(until_sent(3), 10)
        seen = {}
        for name, (token, fragment) in bad_tokens(keys, alg).items():
            err, d = await refused(g.url(), "json" if len(seen) % 2 else "msgpack", token)
            fragments = fragment if isinstance(fragment, tuple) else (fragment,)
            assert any(f in err["message"] for f in fragments), (name, err)
            assert token[:40] not in err["message"] and token[-20:] not in err["message"], name
            assert d["reason"] == ("token_expired" if name == "expired" else "unauthorized"), d
            assert d["reconnect"] is (name == "expired"), (name, d)
            seen[name] = err["message"]
        # Without --allow-anonymous, no token (or an empty one) is refused too.
        err, _ = await refused(g.url(), "json", None)
        assert err["message"] == "a token is required"
        err, _ = await refused(g.url(), "json", "")
        assert err["message"] == "a token is required"
        await asyncio.wait_for(until_sent(len(sent) + 3), 10)
        stop.set()
        await flow
        got = await sub.collect(len(sent), timeout=15)
        assert [m["data"] for m in got] == sent, "the good subscriber lost or reordered messages"
        await sub.close()
        await pub.close()
        return seen

    seen = run(go(), timeout=120)
    m = g.metrics()
    assert m["rtgate_auth_refused_total"] == len(seen) + 2
    assert m["rtgate_closes_connect_timeout_total"] == 0


def test_refused_connect_ignores_what_follows_it(gateway, keys):
    """Requests pipelined behind a refused connect are not served."""
    g = gateway(*keys.flags("HS256"), "--sub-allow", ">", "--pub-allow", ">")

    async def go():
        async with Client(g.url(), "json") as watcher:
            await watcher.connect(token=keys.token("HS256"))
            await watcher.sub("pipe.x")
            c = Client(g.url(), "json")
            await c.open()
            refusal = c.expect_reply(1)
            await c.send_raw('{"type":"connect","id":1,"token":"x.y.z"}\n'
                             '{"type":"pub","id":2,"channel":"pipe.x","data":"sneaky"}')
            assert (await refusal)["error"]["code"] == 401
            await c.expect_disconnect(4001)
            await c.close()
            assert await watcher.quiet(0.5) == []
            assert all(m.get("id") != 2 for m in c.all), "the pub behind it was answered"
    run(go())


def test_exp_mid_session_disconnects_4001_and_refresh_extends(gateway, keys, codec):
    g = gateway(*keys.flags("ES256"), "--jwt-leeway-ms", "0", "--sub-allow", ">")

    async def go():
        short = keys.token("ES256", ttl=4)
        dies = await open_client(g.url(), codec, connect=False)
        lives = await open_client(g.url(), codec, connect=False)
        r1 = await dies.connect(token=short)
        r2 = await lives.connect(token=short)
        assert 0 < r1["expires_in_ms"] <= 4000, r1
        # lives refreshes before exp with a longer token for the same user.
        r = await lives.request("refresh", token=keys.token("ES256", ttl=120))
        assert r["ok"] is True and 60000 < r["expires_in_ms"] <= 120000, r
        t0 = time.monotonic()
        d = await dies.expect_disconnect(4001, timeout=10)
        assert d["reason"] == "token_expired" and d["reconnect"] is True, d
        assert time.monotonic() - t0 <= r1["expires_in_ms"] / 1000 + 2.0
        # Past the first token's exp, the refreshed session is still served.
        await asyncio.sleep(0.6)
        assert not lives.closed.is_set()
        assert (await lives.sub("still.here"))["ok"]
        await lives.close()
        await dies.close()
    run(go())
    assert g.metrics()["rtgate_closes_token_expired_total"] == 1


def test_refresh_for_another_user_or_with_a_bad_token_changes_nothing(gateway, keys):
    g = gateway(*keys.flags("HS256"), "--jwt-leeway-ms", "0")

    async def go():
        async with Client(g.url(), "json") as c:
            await c.connect(token=keys.token("HS256", ttl=5, sub_allow=["a.>"]))
            r = await c.request("refresh", token=keys.token("HS256", sub="mallory", ttl=600,
                                                            sub_allow=[">"]))
            assert r["ok"] is False and r["error"]["code"] == 403, r
            assert "another user" in r["error"]["message"]
            r = await c.request("refresh", token=keys.token("HS256", ttl=-60))
            assert r["ok"] is False and r["error"]["code"] == 401, r
            assert r["error"]["message"] == "token expired"
            r = await c.request("refresh")
            assert r["error"]["code"] == 401 and r["error"]["message"] == "a token is required"
            # Still the first token: its permissions, and its expiry.
            assert (await c.sub("b.x"))["error"]["code"] == 403
            assert (await c.sub("a.x"))["ok"]
            d = await c.expect_disconnect(4001, timeout=15)
            assert d["reason"] == "token_expired"
    run(go())


def test_refresh_replaces_the_permissions(gateway, keys):
    g = gateway(*keys.flags("RS256"))

    async def go():
        async with Client(g.url(), "json") as c:
            await c.connect(token=keys.token("RS256", sub_allow=["a.>"]))
            assert (await c.sub("b.x"))["error"]["code"] == 403
            r = await c.request("refresh", token=keys.token("RS256", ttl=None,
                                                            sub_allow=["b.>"]))
            assert r["ok"] is True and "expires_in_ms" not in r, r
            assert (await c.sub("b.x"))["ok"]
            assert (await c.sub("a.y"))["error"]["code"] == 403
    run(go())


def test_a_token_made_for_another_service_is_refused(gateway, keys):
    """An issuer signs every service's tokens with one key, and each names
    its service in aud (RFC 7519 4.1.3: refuse a token whose aud does not
    name you). Ignoring aud let whoever holds a token made for another
    service (that service itself, say) in as its user. Without
    --jwt-audience a token with any aud is refused; with it, aud must hold it."""
    plain = gateway(*keys.flags("RS256"), "--sub-allow", ">")
    named = gateway(*keys.flags("RS256", "--jwt-audience", "rtgate-test"), "--sub-allow", ">")

    async def go():
        for aud in ("billing-api", ["billing-api", "rtgate-test"]):
            err, _ = await refused(plain.url(), "json", keys.token("RS256", aud=aud))
            assert err["message"] == "token is not for this server (aud)", (aud, err)
        async with Client(plain.url(), "json") as c:
            assert (await c.connect(token=keys.token("RS256")))["user"] == "alice"
        for aud in ("rtgate-test", ["billing-api", "rtgate-test"]):
            async with Client(named.url(), "json") as c:
                assert (await c.connect(token=keys.token("RS256", aud=aud)))["user"] == "alice"
        for aud in (None, "billing-api", ["billing-api"], "rtgate-test2"):
            err, _ = await refused(named.url(), "json", keys.token("RS256", aud=aud))
            assert err["message"] == "token is not for this server (aud)", (aud, err)
        async with Client(named.url(), "json") as c:
            await c.connect(token=keys.token("RS256", aud="rtgate-test"))
            r = await c.request("refresh", token=keys.token("RS256", aud="billing-api"))
            assert r["error"]["code"] == 401, r
    run(go())
    assert "reason=wrong_aud" in plain.log()


def test_refreshes_are_limited_per_connection_and_anonymous_ones_cost_nothing(gateway, keys):
    """A refresh costs a signature check (ES256: ~75 us of CPU, 15 times a
    ping), so an open socket must not turn the message rate (200/s) into
    signature checks: a connection gets 3 in a row, then one a second (429
    with retry_after_ms past it, and nothing changes), and an anonymous
    session's refresh is refused before any check (it could never succeed)."""
    g = gateway(*keys.flags("ES256"), "--allow-anonymous", "--sub-allow", ">", *FAST)

    async def go():
        async with Client(g.url(), "json") as c:
            first = await c.connect(token=keys.token("ES256", ttl=60))
            fresh = keys.token("ES256", ttl=900)
            ids = list(range(100, 106))
            futs = [c.expect_reply(i) for i in ids]
            await c.send_raw("\n".join('{"type":"refresh","id":%d,"token":"%s"}' % (i, fresh)
                                       for i in ids))
            replies = [await asyncio.wait_for(f, 10) for f in futs]
            ok = [r for r in replies if r["ok"]]
            limited = [r for r in replies if not r["ok"]]
            assert 3 <= len(ok) <= 4 and replies[:3] == ok[:3], replies
            assert limited and all(r["error"]["code"] == 429 and r["error"]["retry_after_ms"] > 0
                                   for r in limited), replies
            assert ok[0]["expires_in_ms"] > first["expires_in_ms"]
            # The bucket refills: once retry_after_ms has passed, a refresh goes through.
            await asyncio.sleep(limited[-1]["error"]["retry_after_ms"] / 1000 + 0.1)
            assert (await c.request("refresh", token=fresh))["ok"]
        async with Client(g.url(), "json") as anon:
            await anon.connect()
            r = await anon.request("refresh", token=keys.token("ES256"))
            assert r["error"]["code"] == 403 and "anonymous" in r["error"]["message"], r
    run(go())


def test_permissions_on_sub_resume_pub_and_geo(gateway, keys, codec):
    g = gateway(*keys.flags("HS256"), "--ephemeral", "eph.>")

    async def go():
        tok = keys.token("HS256", sub="u42", sub_allow=["chat.*", "eph.>"],
                         pub_allow=["chat.room1"], geo_allow=["drivers"])
        async with Client(g.url(), codec) as c:
            r = await c.connect(token=tok)
            assert r["user"] == "u42"
            assert (await c.sub("chat.room1"))["ok"]
            r = await c.sub("news.today")
            assert r["error"]["code"] == 403 and r["error"]["reason"] == "forbidden"
            assert r["error"]["message"] == "not allowed to subscribe to news.today"
            assert (await c.sub("chat.a.b"))["error"]["code"] == 403  # * is one token
            # A resume is a sub: checked the same way.
            r = await c.sub("news.today", since=0, epoch="e1")
            assert r["error"]["code"] == 403, r
            assert (await c.pub("chat.room1", {"t": 1}))["ok"]
            r = await c.pub("chat.room2", {"t": 1})
            assert r["error"]["code"] == 403
            assert r["error"]["message"] == "not allowed to publish to chat.room2"
            assert (await c.pub("eph.x", 1))["error"]["code"] == 403  # sub_allow is not pub
            assert (await c.request("geo.set", space="drivers", lat=52.5, lon=13.4))["ok"]
            for t, f in [("geo.set", {"lat": 1, "lon": 1}), ("geo.near", {"lat": 1, "lon": 1,
                                                                        "radius_m": 10}),
                         ("geo.watch", {"lat": 1, "lon": 1, "radius_m": 10})]:
                r = await c.request(t, space="riders", **f)
                assert r["error"]["code"] == 403, (t, r)
                assert r["error"]["message"] == "not allowed to use the presence space riders"
            # Removing oneself is always allowed.
            assert (await c.request("geo.clear", space="riders"))["ok"]
            near = await c.request("geo.near", space="drivers", lat=52.5, lon=13.4, radius_m=100)
            assert [m["user"] for m in near["members"]] == ["u42"]
            m = await c.next_event(("msg",))
            assert m["channel"] == "chat.room1"
    run(go())


def test_default_policy_with_a_key_allows_nothing(gateway, keys):
    """With --jwt-key and no --*-allow, a token without claims may do nothing;
    flags open what they name, for such tokens and anonymous users alike."""
    g1 = gateway(*keys.flags("HS256"))
    g2 = gateway(*keys.flags("HS256"), "--allow-anonymous", "--sub-allow", "public.>",
                 "--pub-allow", "public.chat", "--geo-allow", "lobby")

    async def go():
        async with Client(g1.url(), "json") as c:
            await c.connect(token=keys.token("HS256"))
            assert (await c.sub("chat.room1"))["error"]["code"] == 403
            assert (await c.pub("chat.room1", 1))["error"]["code"] == 403
            r = await c.request("geo.set", space="x", lat=1, lon=1)
            assert r["error"]["code"] == 403
        for token in (keys.token("HS256"), None):
            async with Client(g2.url(), "json") as c:
                await c.connect(**({"token": token} if token else {}))
                assert (await c.sub("public.news"))["ok"]
                assert (await c.sub("private.x"))["error"]["code"] == 403
                assert (await c.pub("public.chat", 1))["ok"]
                assert (await c.pub("public.news", 1))["error"]["code"] == 403
                assert (await c.request("geo.set", space="lobby", lat=1, lon=1))["ok"]
                assert (await c.request("geo.set", space="x", lat=1, lon=1))["error"]["code"] == 403
        # A claim, even empty, replaces the default.
        async with Client(g2.url(), "json") as c:
            await c.connect(token=keys.token("HS256", sub_allow=[], pub_allow=["own.>"]))
            assert (await c.sub("public.news"))["error"]["code"] == 403
            assert (await c.pub("own.x", 1))["ok"]
    run(go())


def test_no_key_is_open_unless_flags_say_otherwise(gateway, keys):
    """Without --jwt-key every connect is anonymous, a token is ignored, and
    the default policy is everything (the quick start); flags narrow it."""
    g1 = gateway()
    g2 = gateway("--pub-allow", "", "--sub-allow", "news.>")

    async def go():
        async with Client(g1.url(), "json") as c:
            r = await c.connect(token=keys.token("HS256", sub="alice"))
            assert r["user"].startswith("anon-") and "expires_in_ms" not in r
            assert (await c.sub("chat.room1"))["ok"]
            assert (await c.pub("chat.room1", {"text": "hi"}))["ok"]
            assert (await c.request("geo.set", space="any", lat=1, lon=1))["ok"]
            r = await c.request("refresh", token="whatever")
            assert r["ok"] is True, r
        async with Client(g2.url(), "json") as c:
            await c.connect()
            assert (await c.pub("chat.room1", 1))["error"]["code"] == 403
            assert (await c.sub("chat.room1"))["error"]["code"] == 403
            assert (await c.sub("news.x"))["ok"]
            assert (await c.request("geo.set", space="any", lat=1, lon=1))["ok"]
    run(go())


def test_anonymous_modes(gateway, keys):
    strict = gateway(*keys.flags("RS256"))
    anon = gateway(*keys.flags("RS256"), "--allow-anonymous", "--sub-allow", ">")

    async def go():
        err, _ = await refused(strict.url(), "json", None)
        assert err["message"] == "a token is required"
        async with Client(anon.url(), "json") as c:
            r = await c.connect()
            assert r["user"] == "anon-" + r["client"]
            # An anonymous session cannot become a user by refresh.
            rr = await c.request("refresh", token=keys.token("RS256"))
            assert rr["error"]["code"] == 403
        # A bad token is refused even where anonymous users are welcome.
        err, _ = await refused(anon.url(), "json", keys.token("RS256", ttl=-100))
        assert err["message"] == "token expired"
        err, _ = await refused(anon.url(), "json", "not-a-token")
        assert "three base64url parts" in err["message"]
        async with Client(anon.url(), "json") as c:
            r = await c.connect(token=keys.token("RS256", sub="bob"))
            assert r["user"] == "bob"
    run(go())


def test_user_in_connected_and_geo_members(gateway, keys):
    g = gateway(*keys.flags("RS256"), "--geo-allow", "drivers", "--allow-anonymous")

    async def go():
        async with Client(g.url(), "json") as a, Client(g.url(), "msgpack") as b, \
                Client(g.url(), "json") as anon:
            ra = await a.connect(token=keys.token("RS256", sub="driver-7"))
            rb = await b.connect(token=keys.token("RS256", sub="auth0|rider.1"))
            rn = await anon.connect()
            assert ra["user"] == "driver-7" and rb["user"] == "auth0|rider.1"
            w = await b.request("geo.watch", space="drivers", lat=52.52, lon=13.405,
                                radius_m=1000)
            assert w["ok"] and w["members"] == []
            await a.request("geo.set", space="drivers", lat=52.52, lon=13.405)
            await anon.request("geo.set", space="drivers", lat=52.5201, lon=13.405)
            ev = await b.next_event(("geo",))
            assert ev["event"] == "join" and ev["member"]["user"] == "driver-7"
            near = await b.request("geo.near", space="drivers", lat=52.52, lon=13.405,
                                   radius_m=500)
            users = {m["client"]: m["user"] for m in near["members"]}
            assert users == {ra["client"]: "driver-7", rn["client"]: rn["user"]}
    run(go())


def test_sighup_reloads_the_key(gateway, keys, tmp_path):
    path = tmp_path / "rotating.secret"
    path.write_bytes(keys.secret)
    g = gateway("--jwt-key", str(path), "--jwt-alg", "HS256")
    other = KeySet.__new__(KeySet)
    other.secret = b"a-second-shared-secret-of-enough-length-0123456789"

    async def connects(secret):
        async with Client(g.url(), "json") as c:
            import jwt
            r = await c.request("connect", token=jwt.encode({"sub": "u"}, secret,
                                                            algorithm="HS256"))
            return r["type"] == "connected"

    def reload_and_wait(event):
        before = g.log().count(event)
        os.kill(g.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while g.log().count(event) == before:
            assert time.monotonic() < deadline, "no %s in the log" % event
            time.sleep(0.05)

    assert run(connects(keys.secret))
    path.write_bytes(other.secret)
    reload_and_wait("event=jwt_key_reloaded")
    assert not run(connects(keys.secret))
    assert run(connects(other.secret))
    # A broken file keeps the key in force.
    path.write_bytes(b"short")
    reload_and_wait("event=jwt_key_reload_failed")
    assert run(connects(other.secret))
    assert "short" not in g.log().split("jwt_key_reload_failed")[1].split("\n")[0]


@pytest.mark.parametrize("case", ["missing_file", "pem_as_hs256", "private_key", "secret_no_alg",
                                  "short_secret", "bad_alg", "alg_without_key",
                                  "audience_without_key"])
def test_bad_key_configuration_exits_2(keys, tmp_path, case):
    from cryptography.hazmat.primitives import serialization
    priv = tmp_path / "priv.pem"
    priv.write_bytes(keys.ec.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    short = tmp_path / "short"
    short.write_bytes(b"0123456789")
    argv = {
        "missing_file": ["--jwt-key", str(tmp_path / "nope"), "--jwt-alg", "HS256"],
        "pem_as_hs256": ["--jwt-key", keys.files["RS256"], "--jwt-alg", "HS256"],
        "private_key": ["--jwt-key", str(priv)],
        "secret_no_alg": ["--jwt-key", keys.files["HS256"]],
        "short_secret": ["--jwt-key", str(short), "--jwt-alg", "HS256"],
        "bad_alg": ["--jwt-key", keys.files["HS256"], "--jwt-alg", "none"],
        "alg_without_key": ["--jwt-alg", "HS256"],
        "audience_without_key": ["--jwt-audience", "rtgate"],
    }[case]
    p = subprocess.run([rtgate_bin(), "--listen", "127.0.0.1:0"] + argv, capture_output=True,
                       timeout=30)
    assert p.returncode == 2, (case, p.stderr)
    err = p.stderr.decode()
    assert "rtgate:" in err and len(err.splitlines()) == 1, err
    assert keys.secret.decode() not in err
    assert "PRIVATE" not in err.replace("private key", "")


def test_no_token_key_or_payload_in_a_debug_log(gateway, keys, tmp_path):
    """At debug level, good and bad tokens, refreshes and publishes leave no
    token, signature, key material or payload in the log."""
    flags = keys.flags("RS256", "--log-level", "debug", "--allow-anonymous", "--sub-allow", ">",
                       "--pub-allow", ">", "--jwt-leeway-ms", "0")
    g = gateway(*flags)
    secrets = []

    async def go():
        bad = bad_tokens(keys, "RS256")
        for name, (token, _) in bad.items():
            secrets.append(token)
            await refused(g.url(), "json", token)
        good = keys.token("RS256", sub="logcheck", ttl=4, info={"email": "x@example.org"})
        secrets.append(good)
        async with Client(g.url(), "msgpack") as c:
            await c.connect(token=good)
            await c.sub("log.x")
            for i in range(5):
                payload = "payload-secret-%d-%s" % (i, os.urandom(6).hex())
                secrets.append(payload)
                await c.pub("log.x", {"text": payload}, msg_id="m%d" % i)
            fresh = keys.token("RS256", sub="logcheck", ttl=3)
            secrets.append(fresh)
            assert (await c.request("refresh", token=fresh))["ok"]
            wrong = keys.token("RS256", sub="someone-else")
            secrets.append(wrong)
            assert (await c.request("refresh", token=wrong))["error"]["code"] == 403
            await c.expect_disconnect(4001, timeout=15)
        # A token sent to an anonymous-friendly server in a malformed message.
        async with Client(g.url(), "json") as c:
            await c.send_raw('{"type":"connect","id":1,"token":"%s","x":' % good)
            await c.next_event(("error",))
    run(go())
    time.sleep(0.3)  # the last close's log lines
    log = g.log()
    assert "auth_refused" in log and "token_expired" in log and "level=debug" in log
    needles = []
    for s in secrets:
        needles.append(s)
        parts = s.split(".")
        needles += [p for p in parts if len(p) >= 16]  # header, claims, signature alone
    needles += keys.key_material() + ["x@example.org"]
    for n in needles:
        assert n not in log, "found in the log: %r" % n[:60]


@pytest.mark.skipif(not os.environ.get("RTGATE_LOADTEST"), reason="RTGATE_LOADTEST not given")
def test_loadtest_sends_a_token(gateway, keys, tmp_path):
    """rtgate-load --token-file: idle and fan-out connections pass a --jwt-key gateway; the
    same run without the token gets no connection ready (each connect refused)."""
    import json
    g = gateway(*keys.flags("RS256"), "--ip-conn-rate", "0", "--pub-rate", "100000",
                "--pub-burst", "100000", "--msg-rate", "100000", "--msg-burst", "100000")
    tok = tmp_path / "token"
    tok.write_text(keys.token("RS256", sub="load", sub_allow=[">"], pub_allow=[">"]) + "\n")

    def load(*args):
        argv = [os.environ["RTGATE_LOADTEST"], "--url", g.url(), "--timeout", "60", "-q",
                "--setup-timeout", "5"] + list(args)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=90)
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        assert lines, p.stderr[-2000:]
        return json.loads(lines[-1])

    r = load("--scenario", "idle", "--subs", "40", "--duration", "1", "--token-file", str(tok))
    assert r["connected"] == 40 and r["ok"], r
    r = load("--scenario", "fanout", "--subs", "20", "--rate", "50", "--duration", "1",
             "--warmup", "0.2", "--subprotocol", "msgpack", "--token-file", str(tok))
    assert r["delivered"] == r["expected"] > 0 and r["errors"] == 0, r
    r = load("--scenario", "idle", "--subs", "5", "--duration", "1")
    assert r["connected"] == 0 and not r["ok"], r
    assert g.metrics()["rtgate_auth_refused_total"] >= 5
