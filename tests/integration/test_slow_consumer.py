"""A client that stops reading while others keep receiving: the others get
everything, and the gateway's memory stays bounded (the per-connection outbox
is bounded; a durable subscriber falls behind into the history, an
ephemeral one loses messages)."""
import asyncio
import socket

import pytest
import websockets

from rtclient import Client, run

MSG_BYTES = 12 * 1024
N_MSGS = 2500            # ~30 MB toward the stuck client
BATCH = 25               # ~300 KB: readers never lag more than this
N_READERS = 2
OUTBOX = 1 << 20         # the gateway's default --max-outbox-bytes


class StuckClient(Client):
    """Opens on a socket with a tiny receive buffer and stops reading at once
    after subscribing, so the server's writes back up quickly."""

    async def open(self, timeout=5.0):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        host, port = self.url.split("/")[2].split(":")
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, (host, int(port)))
        self.ws = await asyncio.wait_for(websockets.connect(
            self.url, sock=s, subprotocols=self.offered, max_size=None, max_queue=1,
            read_limit=4096, ping_interval=None, close_timeout=1), timeout)
        self._reader = asyncio.ensure_future(self._read_loop())
        return self


@pytest.mark.parametrize("codec,kind", [("json", "durable"), ("msgpack", "ephemeral")])
def test_stuck_reader_does_not_hold_back_others_and_memory_is_bounded(gateway, codec, kind):
    g = gateway("--max-unacked", "1000000", "--history", "50", "--ephemeral", "eph.>",
                "--pub-rate", "100000", "--pub-burst", "100000",
                "--msg-rate", "100000", "--msg-burst", "100000",
                "--max-message-bytes", "65536",
                env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"})
    ch = "slow.room" if kind == "durable" else "eph.slow"

    async def go():
        pub = Client(g.url(), codec, name="pub")
        readers = [Client(g.url(), codec, name="r%d" % i) for i in range(N_READERS)]
        stuck = StuckClient(g.url(), codec, name="stuck")
        everyone = [pub, stuck] + readers
        try:
            for c in everyone:
                await c.open()
                await c.connect()
                assert (await c.sub(ch))["ok"] is True
            stuck.pause()
            pad = "x" * MSG_BYTES
            received = [0] * N_READERS
            max_outbox = 0
            rss_base = None
            rss_max = 0
            for b in range(N_MSGS // BATCH):
                reqs = [("pub", {"channel": ch, "data": {"i": b * BATCH + k, "p": pad}})
                        for k in range(BATCH)]
                replies = await pub.requests(reqs, timeout=20)
                assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:1]
                # Wait for the readers to have the whole batch.
                for i, r in enumerate(readers):
                    got = await r.collect(BATCH, timeout=20)
                    idx = [m["data"]["i"] for m in got]
                    assert idx == list(range(received[i], received[i] + BATCH)), (r.name, idx[:3])
                    received[i] += BATCH
                if b % 10 == 9:
                    m = g.metrics()
                    max_outbox = max(max_outbox, m["rtgate_outbox_bytes"])
                    rss = g.rss_kb()
                    if rss_base is None and b >= 19:
                        rss_base = rss  # after ~6 MB: outboxes and history are full
                    rss_max = max(rss_max, rss)
            assert received == [N_MSGS] * N_READERS
            m = g.metrics()
            max_outbox = max(max_outbox, m["rtgate_outbox_bytes"])
            # One outbox full (plus at most one message over it), the others empty-ish.
            assert max_outbox <= OUTBOX + 4 * MSG_BYTES + (N_READERS + 1) * BATCH * 256, max_outbox
            assert max_outbox >= OUTBOX / 2, "the stuck client never backed up: %d" % max_outbox
            grown_mb = (rss_max - rss_base) / 1024.0
            assert grown_mb < 12, ("RSS grew by %.1f MB while %d MB went to a stuck client"
                                   % (grown_mb, N_MSGS * MSG_BYTES >> 20))
            if kind == "ephemeral":
                assert m["rtgate_drops_total"] > 0
            assert m["rtgate_history_messages"] <= 50 * (kind == "durable")
            # The readers got nothing extra.
            for r in readers:
                assert await r.quiet(0.2) == []
            # The stuck client reads again: what it gets is in order, without
            # duplicates; on the durable channel it is told the gap and ends
            # with the latest message.
            stuck._reader = asyncio.ensure_future(stuck._read_loop())
            evs = []
            while True:
                try:
                    e = await stuck.next_event(("msg", "gap"), timeout=2)
                except asyncio.TimeoutError:
                    break
                evs.append(e)
                if e["type"] == "msg" and e["data"]["i"] == N_MSGS - 1:
                    break
            msgs = [e for e in evs if e["type"] == "msg"]
            idx = [e["data"]["i"] for e in msgs]
            assert idx == sorted(set(idx)), "out of order or duplicated"
            assert 0 < len(idx) < N_MSGS
            gaps = [e for e in evs if e["type"] == "gap"]
            if kind == "durable":
                assert idx[-1] == N_MSGS - 1
                assert len(gaps) == 1, gaps
                k = evs.index(gaps[0])
                before, after = evs[k - 1], evs[k + 1]
                assert before["seq"] < gaps[0]["from"] <= gaps[0]["to"] < after["seq"], (
                    before["seq"], gaps[0], after["seq"])
                seqs = [e["seq"] for e in msgs]
                assert seqs == sorted(set(seqs))
                assert len(msgs[msgs.index(after):]) <= 50 + 1  # from the history
            else:
                assert gaps == []
        finally:
            stuck._pending.clear()
            await asyncio.gather(*(c.close(check=False) for c in everyone),
                                 return_exceptions=True)
        for c in [pub] + readers:
            assert not c.violations, (c.name, c.violations)
    run(go(), timeout=150)
