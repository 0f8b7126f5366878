"""The loop reader (fanout/nats_live.c): the nats engine reads every
channel's live messages on the event loop over its own NATS connection
("rtgate-live <node>"). Here a TCP proxy between the gateway and a real
nats-server (natsproxy.py) lets the tests corrupt, forge and black-hole what
that connection receives: the gateway must drop the connection, reconnect,
subscribe again and go on delivering, deliver nothing forged, and never
crash or leak."""
import asyncio
import time

import pytest

from conftest import FAST
from natsproxy import Proxy
from rtclient import Client, run


async def connected(url, codec="json", **kw):
    c = Client(url, codec, **kw)
    await c.open()
    await c.connect()
    return c


def wait_until(cond, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


@pytest.fixture
def proxy(nats):
    px = Proxy(nats.port)
    yield px
    px.close()


def subscribed(px, subject):
    p = px.current()
    return p is not None and subject in p.subs


def metric(g, name):
    return g.metrics().get(name, 0)


async def roundtrip(sub, pubc, channel, data, timeout=5.0):
    """Publishes until sub sees it (the first may land before a resubscribe)."""
    deadline = time.monotonic() + timeout
    while True:
        assert (await pubc.pub(channel, data))["ok"]
        try:
            while True:
                m = await sub.next_event(("msg",), timeout=0.5)
                if m["data"] == data:
                    return
        except asyncio.TimeoutError:
            assert time.monotonic() < deadline, "%r never arrived on %s" % (data, channel)


def proxied_gateway(proxy, gateway, *flags):
    """A gateway on NATS through the proxy, once its loop reader is connected."""
    g = gateway("--nats", proxy.url, "--ephemeral", "eph.>", *FAST, *flags)
    wait_until(lambda: proxy.current() is not None, what="the loop reader to connect")
    return g


def test_garbage_and_oversized_ops_reconnect(proxy, gateway):
    g = proxied_gateway(proxy, gateway)

    async def go():
        sub = await connected(g.url(), name="sub")
        pubc = await connected(g.url(), name="pub")
        try:
            assert (await sub.sub("eph.g"))["ok"]
            assert subscribed(proxy, "rtgate.eph.eph.g")
            await roundtrip(sub, pubc, "eph.g", "first")
            bad = [
                b"MSG rtgate.eph.eph.g 1 99999999999\r\n",  # over max_payload
                b"\x00\xffHELLO WORLD\r\n",  # no such op
                b"MSG rtgate.eph.eph.g 1 5\r\nabcdeXY",  # payload not followed by CRLF
                b"INFO " + b"x" * 70000,  # a control line over 64 KiB
            ]
            for i, junk in enumerate(bad):
                before = len(proxy.live())
                proxy.inject(junk)
                wait_until(lambda: len(proxy.live()) > before
                           and subscribed(proxy, "rtgate.eph.eph.g"),
                           what="reconnect and resubscribe after junk %d" % i)
                await roundtrip(sub, pubc, "eph.g", "after-%d" % i)
            assert not sub.closed.is_set() and not pubc.closed.is_set()
        finally:
            await sub.close()
            await pubc.close()

    run(go(), 90)
    m = g.metrics()
    assert m["rtgate_upstream_reader_bad_total"] >= 4
    assert m["rtgate_upstream_reader_connects_total"] >= 5
    assert m["rtgate_upstream_reader_up"] == 1
    log = open(g.log_path, "rb").read()
    assert b"event=nats_live_disconnected" in log and b"protocol error" in log


def test_forged_messages_are_not_delivered(proxy, gateway):
    g = proxied_gateway(proxy, gateway)

    def msg(subject, sid, payload, hdr=None):
        if hdr is None:
            return b"MSG %s %d %d\r\n%s\r\n" % (subject, sid, len(payload), payload)
        return b"HMSG %s %d %d %d\r\n%s%s\r\n" % (subject, sid, len(hdr), len(hdr) + len(payload),
                                                 hdr, payload)

    async def go():
        sub = await connected(g.url(), name="sub")
        try:
            assert (await sub.sub("eph.f"))["ok"]
            sid = proxy.current().subs["rtgate.eph.eph.f"]
            inv0 = metric(g, "rtgate_upstream_invalid_total")
            subj = b"rtgate.eph.eph.f"
            proxy.inject(msg(subj, sid + 1000, b'{"wrong":"sid"}'))
            proxy.inject(msg(b"rtgate.eph.eph.other", sid, b'{"wrong":"subject"}'))
            proxy.inject(msg(subj, sid, b"not json"))
            proxy.inject(msg(subj, sid, b'{"bad":"encoding"}',
                             b"NATS/1.0\r\nRtgate-Encoding: zip\r\n\r\n"))
            proxy.inject(msg(subj, sid, b'{"good":1}',
                             b"NATS/1.0\r\nRtgate-Msg-Id: m%2D1\r\nRtgate-Ts: 1234\r\n\r\n"))
            m = await sub.next_event(("msg",), timeout=5)
            assert m["data"] == {"good": 1}, m
            assert m["channel"] == "eph.f" and m.get("msg_id") == "m-1" and m["ts"] == 1234
            assert await sub.quiet(0.5) == []
            wait_until(lambda: metric(g, "rtgate_upstream_invalid_total") >= inv0 + 2,
                       what="the invalid payloads to be counted")
            # Nothing above broke the stream: the reader is still on its first connection.
            assert len(proxy.live()) == 1
        finally:
            await sub.close()

    run(go(), 60)


def test_silent_server_is_detected(proxy, gateway):
    """A half-open NATS connection (nothing comes back) is dropped after two
    unanswered PINGs (5 s apart), and the reader reconnects by itself. A
    subscribe meanwhile waits for its confirmation without holding anyone up,
    and is answered 503 once --sub-timeout-ms is over."""
    g = proxied_gateway(proxy, gateway, "--sub-timeout-ms", "1500")

    async def go():
        sub = await connected(g.url(), name="sub")
        pubc = await connected(g.url(), name="pub")
        try:
            assert (await sub.sub("eph.h"))["ok"]
            await roundtrip(sub, pubc, "eph.h", "before")
            first = proxy.current()
            first.blackhole = True
            # A subscribe meanwhile is answered 503 when its time is up; the
            # loop is not held up meanwhile (a ping comes back at once).
            t0 = time.monotonic()
            _rid, fut, sending = sub.request_nowait("sub", channel="eph.h2")
            await sending
            p0 = time.monotonic()
            await pubc.ping()
            await pubc.next_event(("pong",), timeout=1)
            assert time.monotonic() - p0 < 0.5
            r = await asyncio.wait_for(fut, 5)
            assert not r["ok"] and r["error"]["code"] == 503, r
            assert "retry_after_ms" in r["error"]
            assert 1.4 < time.monotonic() - t0 < 3.5
            deadline = time.monotonic() + 25
            while proxy.current() is first or proxy.current() is None:
                assert time.monotonic() < deadline, "the silent connection was never dropped"
                await asyncio.sleep(0.2)
            await roundtrip(sub, pubc, "eph.h", "after")
            assert (await sub.sub("eph.h2"))["ok"]
            await roundtrip(sub, pubc, "eph.h2", "after2")
        finally:
            await sub.close()
            await pubc.close()

    run(go(), 90)
    assert metric(g, "rtgate_upstream_reader_confirm_failures_total") >= 1


def test_read_window_batches_reads(nats, gateway):
    """A burst read with a 5 ms window takes far fewer reads (wake-ups) than
    messages, and every message arrives once, in order."""
    g = gateway("--nats", nats.url, "--ephemeral", "eph.>", "--nats-read-window-ms", "5", *FAST)
    n = 3000

    async def go():
        sub = await connected(g.url(), name="sub", max_queue=2**14)
        pubc = await connected(g.url(), name="pub")
        try:
            assert (await sub.sub("eph.w"))["ok"]
            reads0 = metric(g, "rtgate_upstream_reader_reads_total")
            for chunk in range(0, n, 500):
                rs = await pubc.requests([("pub", {"channel": "eph.w", "data": i})
                                          for i in range(chunk, chunk + 500)], timeout=30)
                assert all(r["ok"] for r in rs)
            got = await sub.collect(n, timeout=30)
            assert [m["data"] for m in got] == list(range(n))
            reads = metric(g, "rtgate_upstream_reader_reads_total") - reads0
            assert 0 < reads < n / 4, "%d reads for %d messages" % (reads, n)
        finally:
            await sub.close()
            await pubc.close()

    run(go(), 90)


@pytest.mark.parametrize("window", ["0", "1"])
def test_cross_node_through_the_reader(nats, nodes, window):
    """Messages published on one node reach a subscriber on another, in order,
    through the loop reader, whether reads are windowed or not."""
    a, b = nodes(nats.url, 2, "--nats-read-window-ms", window)

    async def go():
        sub = await connected(a.url(), "msgpack", name="sub")
        pubc = await connected(b.url(), name="pub")
        try:
            assert (await sub.sub("eph.x"))["ok"]
            for i in range(50):
                assert (await pubc.pub("eph.x", {"i": i}))["ok"]
            got = await sub.collect(50, timeout=10)
            assert [m["data"]["i"] for m in got] == list(range(50))
        finally:
            await sub.close()
            await pubc.close()

    run(go(), 60)
    assert a.metrics()["rtgate_upstream_reader_up"] == 1
    assert a.metrics()["rtgate_upstream_reader_messages_total"] >= 50


def test_durable_messages_stored_while_the_reader_reconnects_are_read_back(proxy, nats, gateway):
    """Durable live subjects ride the loop reader too. Messages stored while
    its connection is down arrive once, in order, right after it is back:
    the reconnect probes every durable channel at once, well before the
    quiet-channel probe (2 s after the last live message) would."""
    g = proxied_gateway(proxy, gateway)
    direct = gateway("--nats", nats.url, "--ephemeral", "eph.>", *FAST)  # publishes around the proxy

    async def go():
        sub = await connected(g.url(), name="sub", auto_ack=True)
        pubc = await connected(direct.url(), name="pub")
        try:
            assert (await sub.sub("dur.r"))["ok"]
            assert subscribed(proxy, "rtgate.live.dur.r")
            seqs = []
            for i in range(30):
                seqs.append((await pubc.pub("dur.r", {"i": i}))["seq"])
            got = await sub.collect(30, timeout=10)
            last_live = time.monotonic()
            assert [m["seq"] for m in got] == seqs
            before = len(proxy.live())
            proxy.hold = True  # the reconnect waits until released
            proxy.inject(b"\x00junk\r\n")
            # Stored while the reader is down: nothing after them reveals them.
            rs = await pubc.requests([("pub", {"channel": "dur.r", "data": {"i": i}})
                                      for i in range(30, 40)], timeout=10)
            assert all(r["ok"] for r in rs), rs
            seqs += [r["seq"] for r in rs]
            await asyncio.sleep(max(0.0, last_live + 0.5 - time.monotonic()))
            assert time.monotonic() - last_live < 0.9, "publishing took too long to tell"
            proxy.hold = False
            got = await sub.collect(10, timeout=10)
            assert [m["seq"] for m in got] == seqs[30:]
            assert [m["data"]["i"] for m in got] == list(range(30, 40))
            assert len(proxy.live()) > before
            assert time.monotonic() - last_live < 1.6, "read back only by the quiet probe"
            assert await sub.quiet(0.5) == []
        finally:
            proxy.hold = False
            await sub.close()
            await pubc.close()

    run(go(), 60)
    assert metric(g, "rtgate_upstream_reader_bad_total") >= 1


def test_a_url_the_reader_cannot_use_is_an_error_at_start():
    """Live messages have one path, the loop reader: a URL it cannot use
    (ws://) stops the gateway at start with a clear log line naming the
    server without its credentials, instead of a silent fallback."""
    from conftest import rtgate_refused
    rc, log = rtgate_refused("--nats", "ws://alice:s3cret@127.0.0.1:1")
    assert rc != 0, log
    assert "nats_url_unsupported" in log and "127.0.0.1:1" in log, log
    assert "s3cret" not in log and "alice" not in log, log
