"""The loop reader (fanout/nats_live.c): the nats engine reads ephemeral
channels' messages on the event loop over its own NATS connection
("rtgate-live <node>"). Here a TCP proxy between the gateway and a real
nats-server lets the tests corrupt, forge and black-hole what that
connection receives: the gateway must drop the connection, reconnect,
subscribe again and go on delivering, deliver nothing forged, and never
crash or leak."""
import asyncio
import re
import select
import socket
import threading
import time

import pytest

from conftest import FAST
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


class Pair:
    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.live = False  # the loop reader's connection (CONNECT name rtgate-live ...)
        self.blackhole = False
        self.subs = {}  # subject -> sid
        self.lock = threading.Lock()  # one writer to the client side at a time
        self.closed = False
        self._line = b""


class Proxy:
    """Forwards 127.0.0.1:port to the NATS server; records each connection's
    SUBs and can inject bytes into, or swallow what goes to, the loop reader."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.url = "nats://127.0.0.1:%d" % self.port
        self.pairs = []
        self.stop = False
        self.hold = False  # True: new connections wait in the backlog (no INFO for them)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                if self.hold:
                    time.sleep(0.01)
                    continue
                r, _, _ = select.select([self.lsock], [], [], 0.1)
                if not r:
                    continue
                c, _ = self.lsock.accept()
                u = socket.create_connection(("127.0.0.1", self.upstream_port))
            except (OSError, ValueError):  # closed at teardown, or the server is gone
                return
            p = Pair(c, u)
            self.pairs.append(p)
            threading.Thread(target=self._pump, args=(p,), daemon=True).start()

    def _pump(self, p):
        socks = [p.client, p.upstream]
        try:
            while not self.stop and not p.closed:
                r, _, _ = select.select(socks, [], [], 0.1)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    if s is p.client:
                        self._client_bytes(p, data)
                        p.upstream.sendall(data)
                    elif not (p.live and p.blackhole):
                        with p.lock:
                            p.client.sendall(data)
        except OSError:
            pass
        p.closed = True
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def _client_bytes(self, p, data):
        p._line += data
        *lines, p._line = p._line.split(b"\n")
        for line in lines:
            if line.startswith(b"CONNECT ") and b'"rtgate-live ' in line:
                p.live = True
            m = re.match(rb"SUB (\S+) (\d+)", line)
            if m:
                p.subs[m.group(1).decode()] = int(m.group(2))
            m = re.match(rb"UNSUB (\d+)", line)
            if m:
                sid = int(m.group(1))
                p.subs = {k: v for k, v in p.subs.items() if v != sid}

    def live(self):
        """The loop reader's connections so far (the last one is current)."""
        return [p for p in self.pairs if p.live]

    def current(self):
        live = [p for p in self.live() if not p.closed]
        return live[-1] if live else None

    def inject(self, data):
        p = self.current()
        assert p is not None, "no live reader connection"
        with p.lock:
            p.client.sendall(data)

    def close(self):
        self.stop = True
        self.lsock.close()
        for p in self.pairs:
            p.closed = True


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


def proxied_gateway(proxy, gateway):
    """A gateway on NATS through the proxy, once its loop reader is connected."""
    g = gateway("--nats", proxy.url, "--ephemeral", "eph.>", *FAST)
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
    unanswered PINGs (5 s apart), and the reader reconnects by itself."""
    g = proxied_gateway(proxy, gateway)

    async def go():
        sub = await connected(g.url(), name="sub")
        pubc = await connected(g.url(), name="pub")
        try:
            assert (await sub.sub("eph.h"))["ok"]
            await roundtrip(sub, pubc, "eph.h", "before")
            first = proxy.current()
            first.blackhole = True
            # A subscribe meanwhile is still answered (its flush times out after 1 s).
            t0 = time.monotonic()
            assert (await sub.sub("eph.h2"))["ok"]
            assert time.monotonic() - t0 < 3
            deadline = time.monotonic() + 25
            while proxy.current() is first or proxy.current() is None:
                assert time.monotonic() < deadline, "the silent connection was never dropped"
                await asyncio.sleep(0.2)
            wait_until(lambda: subscribed(proxy, "rtgate.eph.eph.h2"), what="resubscribe")
            await roundtrip(sub, pubc, "eph.h", "after")
            await roundtrip(sub, pubc, "eph.h2", "after2")
        finally:
            await sub.close()
            await pubc.close()

    run(go(), 90)
    assert metric(g, "rtgate_upstream_reader_flush_timeouts_total") >= 1


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


@pytest.mark.parametrize("reader", ["0", "1"])
def test_cross_node_with_and_without_reader(nats, nodes, reader):
    a, b = nodes(nats.url, 2, "--nats-loop-reader", reader)

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
    assert a.metrics()["rtgate_upstream_reader_up"] == (1 if reader == "1" else 0)


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
