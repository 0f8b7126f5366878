"""TLS on the gateway's one port (--tls-cert, --tls-key): wss:// and https://,
a clear 400 for plain HTTP, start-up refusing files that cannot serve (exit
2), SIGHUP reloading them (a bad new file keeps the old pair), and plain
ws:// handshakes (400) and set-ups that stall (half a ClientHello, TLS then
silence, TCP then silence, half a request) closed within the handshake
timeout while other clients keep flowing."""
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import rtgate_bin
from edgekit import (SMALL_ASAN, STREAM_FLAGS, attack_checked, closed_by_peer, connect_from,
                     handshake, make_cert, wait_for)
from rtclient import Client, run

HANDSHAKE_TIMEOUT_MS = 2000


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    return {name: make_cert(d, name, cn=name, kind=kind)
            for name, kind in (("ec", "ec"), ("rsa", "rsa"), ("other", "ec"))}


def tls_flags(cert, key):
    return ("--tls-cert", cert, "--tls-key", key)


def served_fingerprint(port, cafile):
    """SHA-256 of the certificate the gateway presents to a new handshake."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def fingerprint_of(cert_path):
    der = ssl.PEM_cert_to_DER_cert(open(cert_path).read())
    return hashlib.sha256(der).hexdigest()


def test_wss_and_https_on_the_same_port(gateway, certs):
    cert, key = certs["ec"]
    g = gateway(*tls_flags(cert, key))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert g.http_get(path)[0] == 200, path

    async def go():
        ctx = ssl.create_default_context(cafile=cert)
        async with Client(g.url(), "json", ssl=ctx) as c:
            r = await c.connect()
            assert r["type"] == "connected"
            await c.ping()
            assert (await c.next_event(("pong",)))["type"] == "pong"
    run(go())
    assert g.url().startswith("wss://")


def test_plain_http_on_the_tls_port_gets_400(gateway, certs):
    g = gateway(*tls_flags(*certs["ec"]))
    status, _, body, s = handshake(g.port)
    s.close()
    assert status == 400 and b"use wss://" in body, (status, body)
    s = connect_from(g.port)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert g.metrics()['rtgate_handshakes_refused_total{cause="not_tls"}'] == 2


@pytest.mark.parametrize("case", ["missing", "directory", "garbage", "mismatched",
                                  "encrypted", "cert_only"])
def test_start_refuses_files_that_cannot_serve(tmp_path, certs, case):
    cert, key = certs["ec"]
    if case == "missing":
        cert = str(tmp_path / "nope.crt")
    elif case == "directory":
        cert = str(tmp_path)
    elif case == "garbage":
        cert = str(tmp_path / "garbage.crt")
        open(cert, "w").write("-----BEGIN CERTIFICATE-----\nnot base64\n")
    elif case == "mismatched":
        key = certs["other"][1]
    elif case == "encrypted":
        enc = str(tmp_path / "enc.key")
        subprocess.run(["openssl", "pkey", "-in", key, "-out", enc, "-aes256", "-passout",
                        "pass:secret"], check=True, capture_output=True)
        key = enc
    argv = [rtgate_bin(), "--listen", "127.0.0.1:0", "--tls-cert", cert]
    if case != "cert_only":
        argv += ["--tls-key", key]
    p = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    err = p.stderr.decode()
    assert p.returncode == 2, (case, p.returncode, err)
    assert err.startswith("rtgate: "), err
    want = {"missing": "No such file", "directory": "not a regular file",
            "garbage": "no PEM certificate", "mismatched": "does not hold the private key",
            "encrypted": "no unencrypted PEM private key", "cert_only": "go together"}[case]
    assert want in err, err
    assert "secret" not in err and "PRIVATE KEY" not in err


def test_sighup_reloads_and_a_bad_file_keeps_the_old_pair(gateway, certs, tmp_path):
    cert, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    shutil.copy(certs["ec"][0], cert)
    shutil.copy(certs["ec"][1], key)
    g = gateway(*tls_flags(cert, key))
    ca = str(tmp_path / "ca.pem")  # every certificate the test may see
    with open(ca, "w") as f:
        for c, _ in certs.values():
            f.write(open(c).read())
    g.tls_ca = ca
    assert served_fingerprint(g.port, ca) == fingerprint_of(certs["ec"][0])

    async def go():
        ctx = ssl.create_default_context(cafile=ca)
        # A connection made before the reloads must live through them.
        async with Client(g.url(), "json", ssl=ctx) as c:
            await c.connect()
            # Another key type (ECDSA to RSA): the old certificate must go.
            shutil.copy(certs["rsa"][0], cert)
            shutil.copy(certs["rsa"][1], key)
            os.kill(g.pid, signal.SIGHUP)
            assert wait_for(lambda: "event=tls_reloaded" in g.log(), 10), g.log()
            assert served_fingerprint(g.port, ca) == fingerprint_of(certs["rsa"][0])
            # A bad pair (a key of another certificate): logged, the RSA pair stays.
            shutil.copy(certs["other"][1], key)
            os.kill(g.pid, signal.SIGHUP)
            assert wait_for(lambda: "event=tls_reload_failed" in g.log(), 10), g.log()
            assert "does not hold the private key" in g.log()
            assert served_fingerprint(g.port, ca) == fingerprint_of(certs["rsa"][0])
            # Then a garbage certificate: the same.
            shutil.copy(certs["rsa"][1], key)
            open(cert, "w").write("garbage\n")
            os.kill(g.pid, signal.SIGHUP)
            assert wait_for(lambda: g.log().count("event=tls_reload_failed") == 2, 10)
            assert served_fingerprint(g.port, ca) == fingerprint_of(certs["rsa"][0])
            await c.ping()
            assert (await c.next_event(("pong",)))["type"] == "pong"
    run(go())
    assert g.http_get("/healthz")[0] == 200


def client_hello_bytes():
    """The first flight of a TLS client (a ClientHello), from Python's ssl."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[0] == 0x16 and len(hello) > 100
    return hello


def test_plain_and_stalled_setups_are_closed_in_time_and_others_flow(gateway, certs):
    cert, key = certs["ec"]
    g = gateway(*tls_flags(cert, key), "--handshake-timeout-ms", str(HANDSHAKE_TIMEOUT_MS),
                *STREAM_FLAGS, env=SMALL_ASAN)
    hello = client_hello_bytes()
    ctx = ssl.create_default_context(cafile=cert)
    per_kind = 100

    def attack():
        for i in range(per_kind):  # plain ws:// on the TLS port: 400, then closed
            status, _, body, s = handshake(g.port)
            assert status == 400 and b"use wss://" in body, (status, body)
            assert closed_by_peer(s, 5)
            s.close()
        socks = []
        for i in range(per_kind):
            s = connect_from(g.port)  # half a ClientHello, then nothing
            s.sendall(hello[:len(hello) // 2])
            socks.append(("half_hello", s))
            socks.append(("tcp_only", connect_from(g.port)))  # nothing at all
            t = ctx.wrap_socket(connect_from(g.port), server_hostname="localhost")
            socks.append(("tls_then_silence", t))  # TLS done, no HTTP request
            s = ctx.wrap_socket(connect_from(g.port), server_hostname="localhost")
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # half a request
            socks.append(("half_request", s))
        started = time.monotonic()
        # Each kind is one stage's timeout from its start (lws counts whole
        # seconds, up to one more); 3x covers a loaded CI machine.
        bound = 3 * HANDSHAKE_TIMEOUT_MS / 1000.0 + 1.0
        open_after = [kind for kind, s in socks
                      if not closed_by_peer(s, max(0.1, bound - (time.monotonic() - started)))]
        for _, s in socks:
            s.close()
        assert not open_after, "still open after %.1f s: %s" % (bound, sorted(set(open_after)))

    attack_checked(g, attack, "%d plain handshakes and stalled set-ups of each kind" % per_kind,
                   cafile=cert)


@pytest.mark.skipif(not os.environ.get("RTGATE_LOADTEST"), reason="RTGATE_LOADTEST not given")
def test_rtgate_load_speaks_wss(gateway, certs):
    """bench/tls.sh's client: rtgate-load's churn over wss://, certificate verified."""
    import json
    cert, key = certs["ec"]
    g = gateway(*tls_flags(cert, key), "--ip-conn-rate", "0")
    p = subprocess.run([os.environ["RTGATE_LOADTEST"], "--url", g.url(), "--tls-ca", cert,
                        "--scenario", "churn", "--rate", "20", "--duration", "1", "--warmup", "0",
                        "--server-pid", str(g.pid), "--timeout", "60", "-q"],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["ok"] and r["measured_completed"] >= 15 and r["measured_failed"] == 0, r
    assert r["conn"]["handshake_failures"] == 0, r
    # Against another certificate authority the handshake must fail.
    p = subprocess.run([os.environ["RTGATE_LOADTEST"], "--url", g.url(), "--tls-ca",
                        certs["other"][0], "--scenario", "churn", "--rate", "20",
                        "--duration", "1", "--warmup", "0", "--timeout", "60", "-q"],
                       capture_output=True, text=True, timeout=90)
    r = json.loads(p.stdout)
    assert not r["ok"] and r["conn"]["handshake_failures"] > 0, r
