"""
A steady stream through a gateway, run as its own process by the edge tests
(edgekit.Stream) so that the tests' own hostile load cannot slow it down: one
client publishes to a channel every --interval-ms, another subscribes and
records when each message arrives. It runs until its stdin closes, then
prints one JSON line: sent, received, the longest gap between two deliveries
(ms) and the longest publish-to-delivery latency (ms).

    edge_stream.py URL [--cafile PEM] [--interval-ms 100] [--proxy-from IP]

--proxy-from IP: connect from that local address and start each connection
with a PROXY v2 header (for a gateway run with --proxy-protocol v2).
"""
import argparse
import asyncio
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edgekit import proxy_v2_header  # noqa: E402

CHANNEL = "edge.stream"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--cafile")
    ap.add_argument("--interval-ms", type=float, default=100.0)
    ap.add_argument("--proxy-from")
    args = ap.parse_args()
    ctx = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    kw = {"subprotocols": ["rtgate.v1.json"], "open_timeout": 10, "ping_interval": None}
    if ctx:
        kw["ssl"] = ctx

    async def open_ws():
        if not args.proxy_from:
            return await websockets.connect(args.url, **kw)
        u = urllib.parse.urlsplit(args.url)
        s = socket.create_connection((u.hostname, u.port), source_address=(args.proxy_from, 0))
        s.sendall(proxy_v2_header("192.0.2.200", u.hostname, 40000, u.port))
        if ctx:
            kw["server_hostname"] = u.hostname
        return await websockets.connect(args.url, sock=s, **kw)

    sub = await open_ws()
    pub = await open_ws()
    for ws in (sub, pub):
        await ws.send(json.dumps({"type": "connect", "id": 1}))
        await ws.recv()
    await sub.send(json.dumps({"type": "sub", "id": 2, "channel": CHANNEL}))
    while json.loads((await sub.recv()).splitlines()[0]).get("type") != "reply":
        pass

    stats = {"sent": 0, "received": 0, "max_gap_ms": 0.0, "max_latency_ms": 0.0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    print(json.dumps({"ready": True}), flush=True)

    async def publish():
        n = 0
        next_at = time.monotonic()
        while not stop.is_set():
            n += 1
            await pub.send(json.dumps({"type": "pub", "id": 10 + n, "channel": CHANNEL,
                                       "data": {"t": time.monotonic()}}))
            stats["sent"] = n
            next_at += args.interval_ms / 1000.0
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def drain_replies():
        async for _ in pub:
            pass

    async def receive():
        last = None
        async for frame in sub:
            now = time.monotonic()
            for line in frame.splitlines():
                m = json.loads(line)
                if m.get("type") != "msg":
                    continue
                stats["received"] += 1
                stats["max_latency_ms"] = max(stats["max_latency_ms"],
                                              (now - m["data"]["t"]) * 1000.0)
            if last is not None:
                stats["max_gap_ms"] = max(stats["max_gap_ms"], (now - last) * 1000.0)
            last = now

    tasks = [asyncio.create_task(t()) for t in (publish, drain_replies, receive)]
    await stop.wait()
    await asyncio.sleep(2 * args.interval_ms / 1000.0)  # the last ones in flight
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ws in (sub, pub):
        await ws.close()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
