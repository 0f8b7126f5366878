"""The token's sub is the user backends see: a client publish reaches a raw
NATS subscriber with `Rtgate-User: <sub>` (docs/nats.md), an anonymous one
with its `anon-` id, and permissions hold on the NATS engine too."""
import pytest

from natsraw import RawNats
from rtclient import Client, run
from tokens import KeySet


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return KeySet(tmp_path_factory.mktemp("keys"))


def next_on(raw, subject, marker):
    """The next message on subject whose payload holds marker."""
    while True:
        s, headers, payload = raw.next_msg(timeout=10)
        if s == subject and marker in payload:
            return headers, payload


def test_rtgate_user_header_is_the_token_sub(nats, nodes, keys):
    (a,) = nodes(nats.url, 1, *keys.flags("ES256"), "--allow-anonymous", "--pub-allow", "eph.>",
                 "--sub-allow", "eph.>")
    raw = RawNats(nats.url)

    async def go():
        raw.sub("rtgate.eph.>")
        async with Client(a.url(), "json") as alice, Client(a.url(), "msgpack") as anon:
            r = await alice.connect(token=keys.token("ES256", sub="alice@example"))
            assert r["user"] == "alice@example"
            ra = await anon.connect()
            assert (await alice.pub("eph.room", {"from": "alice"}))["ok"]
            headers, _ = next_on(raw, "rtgate.eph.eph.room", b"alice")
            assert headers["Rtgate-User"] == "alice@example"
            assert headers["Rtgate-Client"] == r["client"]
            assert (await anon.pub("eph.room", {"from": "anon"}))["ok"]
            headers, _ = next_on(raw, "rtgate.eph.eph.room", b"anon")
            assert headers["Rtgate-User"] == ra["user"] and ra["user"].startswith("anon-")
            # A refused publish never reaches NATS.
            r = await alice.pub("dur.secret", {"from": "alice-refused"})
            assert r["error"]["code"] == 403
            raw.sub("rtgate.>", sid=2)
            assert (await alice.pub("eph.room", {"from": "alice-after"}))["ok"]
            seen = []
            while True:
                s, _, payload = raw.next_msg(timeout=10)
                seen.append(payload)
                if b"alice-after" in payload:
                    break
            assert not any(b"alice-refused" in p for p in seen)
    try:
        run(go())
    finally:
        raw.close()
