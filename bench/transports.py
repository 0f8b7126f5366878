#!/usr/bin/python3
"""
bench/transports.py: what each transport costs the gateway, in one run
(BENCHMARKS.md, "Transports"): memory per idle session and CPU per delivery
of WebSocket, Server-Sent Events and long-polling, measured alike.

For each round, each binary (--rtgate PATH, repeatable: e.g. main's build and
this one, alternating so the shared machine's noise falls on both) and each
transport the binary serves:

  idle    --idle sessions are opened and held (a WebSocket: upgraded, connect
          sent and answered; SSE: a stream, its `connected` read; long-poll:
          the first poll answered, the next one held): the gateway's RSS delta
          (/proc/PID/status) per session, after a settling second.
  fanout  --subs subscribers of that transport on one ephemeral channel and
          one WebSocket publisher sending --rate messages a second for
          --duration seconds: the gateway's CPU (utime + stime, /proc/PID/stat)
          over the window divided by the deliveries it made in it
          (rtgate_deliveries_total from /metrics). The run is valid only if no
          delivery was dropped and every subscriber got every message
          ("ok" in the line).

One JSON object per measurement goes to stdout and is appended to --out.
The clients are plain sockets (asyncio), the same code path for counting on
every transport (a substring count of "type":"msg"); the gateway is pinned to
SERVER_CPUS and this script to CLIENT_CPUS when taskset is there. Every
process started is stopped by pid; every wait is bounded.

Usage: bench/transports.py --rtgate build-rel/gateway/rtgate [--rtgate main/...]
       [--label this --label main] [--idle 2000] [--subs 100] [--rate 100]
       [--duration 10] [--rounds 3] [--transports ws,sse,longpoll] [--out FILE]
"""
import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

MSG = b'"type":"msg"'
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Gateway:
    def __init__(self, binary, flags, log):
        self.port = free_port()
        argv = [binary, "--listen", "127.0.0.1:%d" % self.port, "--log-level", "warn",
                "--ip-conn-rate", "0", "--ephemeral", "bench.>", "--drain-ms", "0",
                "--pub-rate", "1000000", "--pub-burst", "1000000", "--msg-rate", "1000000",
                "--msg-burst", "1000000"] + flags
        cpus = os.environ.get("SERVER_CPUS", "0")
        if shutil.which("taskset"):
            argv = ["taskset", "-c", cpus] + argv
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rtgate did not start")

    def get(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=5) as r:
            return r.status, r.read().decode()

    def metric(self, name):
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rpartition(" ")[2])
        return total

    def cpu_s(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# ---- minimal clients: each counts the deliveries it reads -------------------------

def ws_frame(text):
    """One masked client text frame."""
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class Counter:
    """Counts "type":"msg" in a byte stream (across read boundaries)."""

    def __init__(self):
        self.n = 0
        self.tail = b""

    def feed(self, data):
        buf = self.tail + data
        self.n += buf.count(MSG)
        cut = len(buf) - (len(MSG) - 1)
        self.tail = buf[cut:] if cut > 0 else buf
        # a match across the cut would be counted twice: drop a tail that ends one
        if self.tail.endswith(MSG):
            self.tail = b""


async def ws_open(port, channel=None):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: rtgate.v1.json\r\n\r\n" % key).encode())
    await r.readuntil(b"\r\n\r\n")
    w.write(ws_frame('{"type":"connect","id":1}'))
    if channel:
        w.write(ws_frame('{"type":"sub","id":2,"channel":"%s"}' % channel))
    await r.readuntil(b'"connected"')
    if channel:
        await r.readuntil(b'"id":2')
    return r, w


async def sse_open(port, channel=None):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    q = "?channel=%s" % channel if channel else ""
    w.write(("GET /sse%s HTTP/1.1\r\nHost: x\r\n\r\n" % q).encode())
    await r.readuntil(b'"connected"')
    if channel:
        await r.readuntil(b'"id":2')
    return r, w


async def poll_open(port, channel=None):
    """A long-poll session, its next poll held; returns (reader, writer, session, batch)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await r.readuntil(b"\r\n\r\n")
    n = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await r.readexactly(n)
    session = json.loads(body.split(b"\n")[0])["session"]
    batch = 1
    if channel:
        p_r, p_w = await asyncio.open_connection("127.0.0.1", port)
        sub = ('{"type":"sub","id":2,"channel":"%s"}' % channel).encode()
        p_w.write(b"POST /send?seq=1 HTTP/1.1\r\nHost: x\r\nRtgate-Session: " + session.encode() +
                  b"\r\nContent-Length: %d\r\n\r\n" % len(sub) + sub)
        await p_r.readuntil(b"\r\n\r\n")
        p_w.close()
    return r, w, session, batch


def poll_request(w, session, ack):
    w.write(("GET /poll?ack=%d HTTP/1.1\r\nHost: x\r\nRtgate-Session: %s\r\n\r\n"
             % (ack, session)).encode())


async def poll_loop(r, w, session, batch, counter, stop):
    while not stop.is_set():
        poll_request(w, session, batch)
        head = await r.readuntil(b"\r\n\r\n")
        hl = head.lower()
        n = int(hl.split(b"content-length: ")[1].split(b"\r\n")[0])
        batch = int(hl.split(b"rtgate-batch: ")[1].split(b"\r\n")[0])
        counter.feed(await r.readexactly(n))


async def stream_loop(r, counter, stop):
    while not stop.is_set():
        data = await r.read(65536)
        if not data:
            return
        counter.feed(data)


# ---- measurements -------------------------------------------------------------

async def idle(g, transport, n):
    keep = []
    opener = {"ws": ws_open, "sse": sse_open, "longpoll": poll_open}[transport]
    for _ in range(20):  # warm the allocator before the baseline
        keep.append(await opener(g.port))
    await asyncio.sleep(1)
    rss0 = g.rss_kb()
    for _ in range(n):
        c = await opener(g.port)
        if transport == "longpoll":
            poll_request(c[1], c[2], c[3])  # the held poll
        keep.append(c)
    await asyncio.sleep(2)
    rss1 = g.rss_kb()
    held = g.metric("rtgate_connections")
    for c in keep:
        c[1].close()
    return {"idle": n, "sessions": held, "rss_bytes_per_conn": round((rss1 - rss0) * 1024 / n)}


async def fanout(g, transport, subs, rate, duration):
    channel = "bench.fanout"
    counters = [Counter() for _ in range(subs)]
    stop = asyncio.Event()
    tasks, socks = [], []
    for c in counters:
        if transport == "ws":
            r, w = await ws_open(g.port, channel)
            tasks.append(asyncio.ensure_future(stream_loop(r, c, stop)))
        elif transport == "sse":
            r, w = await sse_open(g.port, channel)
            tasks.append(asyncio.ensure_future(stream_loop(r, c, stop)))
        else:
            r, w, session, batch = await poll_open(g.port, channel)
            tasks.append(asyncio.ensure_future(poll_loop(r, w, session, batch, c, stop)))
        socks.append(w)
    pr, pw = await ws_open(g.port)
    drain = asyncio.ensure_future(stream_loop(pr, Counter(), stop))
    await asyncio.sleep(1)
    d0, drops0, cpu0, t0 = g.metric("rtgate_deliveries_total"), g.metric("rtgate_drops_total"), \
        g.cpu_s(), time.monotonic()
    sent, next_at = 0, t0
    payload = '{"type":"pub","id":%d,"channel":"' + channel + '","data":{"n":%d,"pad":"' + \
        "x" * 64 + '"}}'
    while time.monotonic() - t0 < duration:
        sent += 1
        pw.write(ws_frame(payload % (sent + 10, sent)))
        next_at += 1.0 / rate
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + 10
    while sum(c.n for c in counters) < sent * subs and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    cpu1, t1 = g.cpu_s(), time.monotonic()
    d1, drops1 = g.metric("rtgate_deliveries_total"), g.metric("rtgate_drops_total")
    stop.set()
    for w in socks + [pw]:
        w.close()
    for t in tasks + [drain]:
        t.cancel()
    await asyncio.gather(*tasks, drain, return_exceptions=True)
    deliveries = d1 - d0
    got = sum(c.n for c in counters)
    return {"subs": subs, "rate": rate, "duration_s": duration, "sent": sent,
            "deliveries": int(deliveries), "received": got, "drops": int(drops1 - drops0),
            "server_cpu_s": round(cpu1 - cpu0, 3), "window_s": round(t1 - t0, 2),
            "cpu_us_per_delivery": round((cpu1 - cpu0) * 1e6 / deliveries, 3) if deliveries else None,
            "ok": drops1 == drops0 and got == sent * subs}


def serves_http_transports(binary):
    return b"--http-transports" in subprocess.run([binary, "--help"], capture_output=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rtgate", action="append", required=True)
    ap.add_argument("--label", action="append")
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--subs", type=int, default=100)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--transports", default="ws,sse,longpoll")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "transports.jsonl"))
    a = ap.parse_args()
    labels = a.label or [os.path.basename(os.path.dirname(os.path.dirname(p))) for p in a.rtgate]
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {int(c) for c in os.environ.get("CLIENT_CPUS", "1").split(",")})
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    tag = time.strftime("transports-%Y%m%dT%H%M%SZ", time.gmtime())
    log = open("/tmp/bench-transports-%d.log" % os.getpid(), "ab")
    for rnd in range(1, a.rounds + 1):
        for binary, label in zip(a.rtgate, labels):
            http = serves_http_transports(binary)
            for tr in a.transports.split(","):
                if tr != "ws" and not http:
                    continue
                for kind in ("idle", "fanout"):
                    g = Gateway(binary, [], log)
                    try:
                        if kind == "idle":
                            res = asyncio.run(asyncio.wait_for(idle(g, tr, a.idle), 300))
                        else:
                            res = asyncio.run(asyncio.wait_for(
                                fanout(g, tr, a.subs, a.rate, a.duration), a.duration + 120))
                    finally:
                        g.stop()
                    line = dict(label="%s/%s/%s/%s/%d" % (tag, label, tr, kind, rnd), git=git,
                                binary=binary, transport=tr, kind=kind, round=rnd, **res)
                    print(json.dumps(line), flush=True)
                    with open(a.out, "a") as f:
                        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    sys.exit(main())
