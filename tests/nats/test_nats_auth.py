"""NATS authentication (docs/nats.md#security): a token or a user and
password in the URL, an NKey seed (--nats-nkey) and a user credentials file
(--nats-creds, nats-server in operator mode with JWTs made by the test)
each sign both of a gateway's NATS connections in, and rtgate-pub's; a
wrong secret is refused with the server's words; no secret reaches the
log, at debug level."""
import os

import pytest

from conftest import FAST, rtgate_pub, rtgate_refused, wait_ready
from natssec import NKey, Operator
from rtclient import Client, run

TOKEN = "s3cr3t-t0ken-xyz"
PASSWORD = "pa:ss@w0rd/42"  # percent-encoded in the URL
PASSWORD_URL = "pa%3Ass%40w0rd%2F42"


def write(tmp_path, name, text):
    p = os.path.join(str(tmp_path), name)
    with open(p, "w") as f:
        f.write(text)
    return p


def auth_case(kind, tmp_path):
    """(server config lines, good (url, flags), wrong (url, flags), secrets that must not
    be logged) for one kind of credentials; urls have PORT for the port."""
    if kind == "token":
        return (['authorization { token: "%s" }' % TOKEN],
                ("nats://%s@127.0.0.1:PORT" % TOKEN, []),
                ("nats://not-the-token@127.0.0.1:PORT", []),
                [TOKEN])
    if kind == "user":
        return (['authorization { users: [ { user: "gw", password: "%s" } ] }' % PASSWORD],
                ("nats://gw:%s@127.0.0.1:PORT" % PASSWORD_URL, []),
                ("nats://gw:wrong@127.0.0.1:PORT", []),
                [PASSWORD, PASSWORD_URL])
    if kind == "nkey":
        user, stranger = NKey("U"), NKey("U")
        return (["authorization { users: [ { nkey: %s } ] }" % user.public],
                ("nats://127.0.0.1:PORT", ["--nats-nkey", write(tmp_path, "u.nk", user.seed)]),
                ("nats://127.0.0.1:PORT", ["--nats-nkey", write(tmp_path, "x.nk", stranger.seed)]),
                [user.seed, user.seed[:20]])
    op = Operator()
    creds, user = op.user_creds("gateway")
    # a user signed by an account the server does not know
    other = Operator()
    wrong, _ = other.user_creds("stranger")
    user_jwt = creds.split("\n")[1]
    return (op.server_config(),
            ("nats://127.0.0.1:PORT", ["--nats-creds", write(tmp_path, "u.creds", creds)]),
            ("nats://127.0.0.1:PORT", ["--nats-creds", write(tmp_path, "x.creds", wrong)]),
            [user.seed, user_jwt, user_jwt.split(".")[1]])


@pytest.mark.parametrize("kind", ["token", "user", "nkey", "creds"])
def test_credentials_sign_in_and_wrong_ones_are_refused(nats_server, gateway, tmp_path, kind):
    extra, (url, flags), (wrong_url, wrong_flags), secrets = auth_case(kind, tmp_path)
    srv = nats_server(extra=extra)
    url, wrong_url = (u.replace("PORT", str(srv.port)) for u in (url, wrong_url))
    g = gateway("--nats", url, "--ephemeral", "eph.>", "--log-level", "debug", *FAST, *flags)
    wait_ready(g)
    assert "event=nats_live_connected server=127.0.0.1:%d" % srv.port in g.log()

    async def go():
        s = Client(g.url(), "json")
        await s.open()
        await s.connect()
        try:
            assert (await s.sub("eph.a"))["ok"] is True
            assert (await s.sub("dur.a"))["ok"] is True
            rtgate_pub(url, "eph.a", '"live"', ephemeral=True, flags=flags)
            m = await s.next_event(("msg",))
            assert (m["channel"], m["data"]) == ("eph.a", "live")
            out = rtgate_pub(url, "dur.a", '"stored"', flags=flags)
            m = await s.next_event(("msg",))
            assert (m["seq"], m["data"]) == (out["seq"], "stored")
        finally:
            await s.close()
    run(go())
    rc, refused = rtgate_refused("--nats", wrong_url, "--log-level", "debug", *wrong_flags)
    assert rc != 0, refused
    assert "event=nats_refused" in refused and "Authorization Violation" in refused, refused
    # What the gateways wrote (the fixture's own "### argv:" line holds the URL as given).
    written = [line for line in (g.log() + refused).splitlines() if not line.startswith("###")]
    for text in ("\n".join(written),):
        for secret in secrets + ["not-the-token"]:
            assert secret not in text, "%r in the log:\n%s" % (secret, text[-5000:])
