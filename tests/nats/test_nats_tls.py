"""TLS to NATS (docs/nats.md#security): with tls:// URLs or --nats-ca, both
of a gateway's NATS connections (nats.c's for JetStream and publishes, and
the loop reader's for live messages) and rtgate-pub's are TLS, verified
against the CA file, with a client certificate where the server asks for
one. Certificates are made by the test with the openssl command line."""
import pytest

from conftest import FAST, http_json, rtgate_pub, rtgate_refused, wait_ready
from natssec import Certs
from rtclient import Client, run


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("certs")))


async def connected(url, codec="json", **kw):
    c = Client(url, codec, **kw)
    await c.open()
    await c.connect()
    return c


def tls_connections(srv, gw):
    """{connection name: TLS version} of gw's connections to srv (/connz)."""
    _, body = http_json(srv.mon_port, "/connz?limit=1024")
    names = ("rtgate " + gw.node_id, "rtgate-live " + gw.node_id)
    return {c.get("name"): c.get("tls_version") for c in body.get("connections") or []
            if c.get("name") in names}


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-cert", "mutual-tls"])
def test_tls_only_server_delivers_end_to_end(nats_server, gateway, certs, client_cert):
    srv = nats_server(extra=[certs.server_tls(verify_clients=client_cert)], scheme="tls")
    flags = ["--nats-ca", certs.path("ca.pem")]
    if client_cert:
        flags += ["--nats-tls-cert", certs.path("client.pem"),
                  "--nats-tls-key", certs.path("client.key")]
    # A tls:// URL, or a plain one: --nats-ca alone turns TLS on for every connection.
    url = srv.url if not client_cert else "nats://127.0.0.1:%d" % srv.port
    a, b = [gateway("--nats", url, "--ephemeral", "eph.>", *FAST, *flags) for _ in range(2)]
    for g in (a, b):
        wait_ready(g)
        conns = tls_connections(srv, g)
        assert len(conns) == 2 and all(v and v.startswith("1.") for v in conns.values()), conns
        assert "event=nats_live_connected server=127.0.0.1:%d tls=TLSv1.3" % srv.port in g.log()

    async def go():
        s = await connected(a.url(), name="sub-on-a")
        p = await connected(b.url(), "msgpack", name="pub-on-b")
        try:
            assert (await s.sub("eph.t"))["ok"] is True
            assert (await s.sub("dur.t"))["ok"] is True
            r = await p.pub("eph.t", {"n": 1})
            assert r["ok"] is True, r
            m = await s.next_event(("msg",))
            assert (m["channel"], m["data"]) == ("eph.t", {"n": 1})
            r = await p.pub("dur.t", {"n": 2}, msg_id="d2")
            assert r["ok"] is True, r
            m = await s.next_event(("msg",))
            assert (m["channel"], m["seq"], m["data"]) == ("dur.t", r["seq"], {"n": 2})
            out = rtgate_pub(url, "dur.t", '{"n": 3}', flags=flags)
            m = await s.next_event(("msg",))
            assert (m["seq"], m["data"]) == (out["seq"], {"n": 3})
            rtgate_pub(url, "eph.t", '{"n": 4}', ephemeral=True, flags=flags)
            m = await s.next_event(("msg",))
            assert (m["channel"], m["data"]) == ("eph.t", {"n": 4})
        finally:
            await s.close()
            await p.close()
    run(go())


def test_certificate_that_does_not_verify_is_refused(nats_server, certs):
    """A CA that did not sign the server's certificate, and a missing client
    certificate where the server wants one: the gateway does not start, and
    its log says why in one line."""
    srv = nats_server(extra=[certs.server_tls(verify_clients=True)], scheme="tls")
    rc, log = rtgate_refused("--nats", srv.url, "--nats-ca", certs.path("wrong-ca.pem"),
                             "--nats-tls-cert", certs.path("client.pem"),
                             "--nats-tls-key", certs.path("client.key"))
    assert rc != 0, log
    assert "event=nats_refused servers=127.0.0.1:%d" % srv.port in log, log
    assert "unable to get local issuer certificate" in log, log
    rc, log = rtgate_refused("--nats", srv.url, "--nats-ca", certs.path("ca.pem"))
    assert rc != 0 and "event=nats_refused" in log, log
    assert "does it want a client certificate (--nats-tls-cert)?" in log, log


def test_tls_wanted_and_not_offered_is_refused(nats, certs):
    rc, log = rtgate_refused("--nats", "tls://127.0.0.1:%d" % nats.port,
                             "--nats-ca", certs.path("ca.pem"))
    assert rc != 0 and "event=nats_refused" in log, log
    assert "error=\"Secure Connection not available\"" in log, log


def test_bad_tls_files_are_named(nats, certs, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    for flags, words in (
            (["--nats-ca", str(junk)], "CA file %s" % junk),
            (["--nats-ca", str(tmp_path / "absent.pem")], "absent.pem"),
            (["--nats-ca", certs.path("ca.pem"), "--nats-tls-cert", certs.path("client.pem")],
             "needs both"),
            (["--nats-ca", certs.path("ca.pem"), "--nats-tls-cert", certs.path("client.pem"),
              "--nats-tls-key", certs.path("server.key")], "key file")):
        rc, log = rtgate_refused("--nats", nats.url, *flags)
        assert rc != 0 and "event=nats_security_invalid" in log and words in log, (flags, log)
