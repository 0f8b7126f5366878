"""Write coalescing (--flush-window-ms): a connection that wrote less than the
window ago gets its next deliveries only when the window ends, many messages
per frame; a connection that has been quiet, and replies to a client's own
requests, are not delayed. While the loop is saturated the window grows up to
--flush-window-max-ms."""
import asyncio
import json
import os
import re
import subprocess
import time

import pytest

from conftest import rtgate_bin
from rtclient import Client, run

WINDOW_MS = 1000  # the largest allowed: wide margins between "held" and "not held"
N_MSGS = 40


class TimedClient(Client):
    """Records when each frame arrived and how many messages it held."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.frame_log = []  # (monotonic time, number of "msg" messages in the frame)

    def _on_frame(self, frame):
        before = len(self.all)
        super()._on_frame(frame)
        n = sum(1 for m in self.all[before:] if m.get("type") == "msg")
        self.frame_log.append((time.monotonic(), n))


def _burst_gateway(gateway, window):
    return gateway("--ephemeral", "win.>", "--flush-window-ms", str(window),
                   "--pub-rate", "1000", "--pub-burst", "1000")


async def _publish_burst(pub, channel, n):
    """Pipelines n publishes and waits for every reply."""
    replies = await pub.requests([("pub", {"channel": channel, "data": {"i": i}})
                                  for i in range(n)])
    assert all(r.get("ok") is True for r in replies), replies


def test_busy_connection_gets_a_burst_in_few_frames(gateway):
    g = _burst_gateway(gateway, WINDOW_MS)

    async def go():
        sub = TimedClient(g.url(), "json", name="sub")
        pub = Client(g.url(), "json", name="pub")
        try:
            await asyncio.gather(sub.open(), pub.open())
            await asyncio.gather(sub.connect(), pub.connect())
            assert (await sub.sub("win.a"))["ok"]
            # The sub reply was just written: the burst must wait for the window.
            t_reply = sub.frame_log[-1][0]
            await _publish_burst(pub, "win.a", N_MSGS)
            msgs = await sub.collect(N_MSGS, timeout=10)
            assert [m["data"]["i"] for m in msgs] == list(range(N_MSGS))
            msg_frames = [(t, n) for t, n in sub.frame_log if n]
            assert sum(n for _, n in msg_frames) == N_MSGS
            # Held, then written together: one or two frames, not forty.
            assert len(msg_frames) <= 3, msg_frames
            # Not before the window since the last write (less the timer's slack and
            # scheduling jitter on the client side).
            first = msg_frames[0][0]
            assert first - t_reply >= 0.7 * WINDOW_MS / 1000, (first - t_reply)
            times = [t_reply] + [t for t, _ in msg_frames]
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert all(gap >= 0.7 * WINDOW_MS / 1000 for gap in gaps), gaps
            assert (await sub.quiet(0.2)) == []  # exactly once
        finally:
            await asyncio.gather(sub.close(), pub.close(), return_exceptions=True)
        assert g.metrics()["rtgate_frames_out_total"] < g.metrics()["rtgate_messages_out_total"]
    run(go(), timeout=60)


def test_quiet_connection_and_replies_are_not_delayed(gateway):
    g = _burst_gateway(gateway, WINDOW_MS)

    async def go():
        sub = TimedClient(g.url(), "json", name="sub")
        pub = Client(g.url(), "json", name="pub")
        try:
            await asyncio.gather(sub.open(), pub.open())
            await asyncio.gather(sub.connect(), pub.connect())
            assert (await sub.sub("win.b"))["ok"]
            # Sequential requests on one connection: each reply must come back well within
            # the window although the connection has just written the previous one.
            t0 = time.monotonic()
            for i in range(5):
                r = await pub.sub("win.r%d" % i)
                assert r["ok"]
            assert time.monotonic() - t0 < 5 * 0.5 * WINDOW_MS / 1000, time.monotonic() - t0
            # The subscriber has been quiet for longer than the window: no wait.
            await asyncio.sleep(1.5 * WINDOW_MS / 1000)
            t_pub = time.monotonic()
            assert (await pub.pub("win.b", {"i": 0}))["ok"]
            msgs = await sub.collect(1, timeout=5)
            assert msgs[0]["data"] == {"i": 0}
            latency = sub.frame_log[-1][0] - t_pub
            assert latency < 0.5 * WINDOW_MS / 1000, latency
        finally:
            await asyncio.gather(sub.close(), pub.close(), return_exceptions=True)
    run(go(), timeout=60)


def test_window_zero_writes_at_once(gateway):
    g = _burst_gateway(gateway, 0)

    async def go():
        sub = TimedClient(g.url(), "json", name="sub")
        pub = Client(g.url(), "json", name="pub")
        try:
            await asyncio.gather(sub.open(), pub.open())
            await asyncio.gather(sub.connect(), pub.connect())
            assert (await sub.sub("win.c"))["ok"]
            t_reply = sub.frame_log[-1][0]
            await _publish_burst(pub, "win.c", N_MSGS)
            msgs = await sub.collect(N_MSGS, timeout=10)
            assert [m["data"]["i"] for m in msgs] == list(range(N_MSGS))
            first = next(t for t, n in sub.frame_log if n)
            assert first - t_reply < 0.5 * WINDOW_MS / 1000, first - t_reply
        finally:
            await asyncio.gather(sub.close(), pub.close(), return_exceptions=True)
    run(go(), timeout=60)


def test_window_above_one_second_is_refused():
    r = subprocess.run([rtgate_bin(), "--flush-window-ms", "1001"], capture_output=True,
                       timeout=10)
    assert r.returncode == 2
    assert b"flush-window-ms" in r.stderr


def test_max_window_above_one_second_is_refused():
    r = subprocess.run([rtgate_bin(), "--flush-window-max-ms", "1001"], capture_output=True,
                       timeout=10)
    assert r.returncode == 2


LOAD = os.environ.get("RTGATE_LOADTEST")


@pytest.mark.skipif(not LOAD or not os.access(LOAD, os.X_OK),
                    reason="RTGATE_LOADTEST (the rtgate-load binary) not given")
def test_window_grows_while_saturated(gateway):
    """Far more than the (sanitizer-built) gateway can write: its loop saturates and the
    window grows past --flush-window-ms (logged at debug level), but never past the max;
    whatever arrives arrives once and in order (ephemeral messages may be dropped on full
    outboxes under this overload)."""
    g = gateway("--ephemeral", "eph.>", "--pub-rate", "100000", "--pub-burst", "100000",
                "--msg-rate", "100000", "--msg-burst", "100000", "--ip-conn-rate", "0",
                "--flush-window-ms", "5", "--flush-window-max-ms", "400", "--log-level", "debug")
    argv = [LOAD, "--url", g.url(), "--scenario", "fanout", "--subs", "2000", "--rate", "1000",
            "--channel-prefix", "eph", "--duration", "4", "--warmup", "0.5", "--drain", "5",
            "--timeout", "60", "-q"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, "rtgate-load printed no JSON (rc %d): %s" % (p.returncode, p.stderr[-2000:])
    r = json.loads(lines[-1])
    assert r["delivered"] > 0 and (r["dup"], r["ooo"]) == (0, 0), r
    grown = [int(m) for m in re.findall(r"flush_window busy=\S+ window_ms=(\d+)", g.log())]
    assert grown and max(grown) > 5, "the window never grew: %s" % g.log()[-3000:]
    assert max(grown) <= 400
