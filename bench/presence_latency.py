#!/usr/bin/env python3
"""Presence latency across nodes, with the Python test client.

    /usr/bin/python3 bench/presence_latency.py SET_URL WATCH_URL N LABEL

A client on SET_URL does N geo.set (meta {"t": send time in ns}, ~150/s); a
watcher on WATCH_URL measures each geo event's arrival minus t. Before that,
20 geo.near on cells nobody followed yet (the first pays a snapshot round trip
to every node) and the same 20 again (answered from the index). Give two
gateways on one nats-server for the cross-node case, the same URL twice for
one node. Prints one line. Bounded: N events, each within the client's
default timeout.
"""
import asyncio
import os
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from rtclient import Client

BERLIN = (52.52, 13.405)

async def conn(url):
    c = Client(url, "json"); await c.open(); await c.connect(); return c

def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(len(v) * p))] * 1000

async def main(url_set, url_watch, n, label):
    s = await conn(url_set); w = await conn(url_watch); q = await conn(url_watch)
    # cold near: cells nobody on the watch node follows yet, then warm
    cold, warm = [], []
    for i in range(20):
        lat = BERLIN[0] + 0.5 * (i + 1)  # a fresh area each time (55 km apart)
        t = time.monotonic(); r = await q.request("geo.near", space="b", lat=lat, lon=BERLIN[1], radius_m=500); cold.append(time.monotonic() - t)
        t = time.monotonic(); r = await q.request("geo.near", space="b", lat=lat, lon=BERLIN[1], radius_m=500); warm.append(time.monotonic() - t)
    r = await w.request("geo.watch", space="b", lat=BERLIN[0], lon=BERLIN[1], radius_m=2000)
    assert r["ok"], r
    lats = []
    for i in range(n):
        t0 = time.time_ns()
        await s.request("geo.set", space="b", lat=BERLIN[0] + (i % 100) * 1e-5, lon=BERLIN[1], meta={"t": t0})
        e = await w.next_event(("geo",))
        lats.append((time.time_ns() - e["member"]["meta"]["t"]) / 1e9)
        await asyncio.sleep(0.005)
    print("%s: watch event after geo.set p50 %.2f ms p99 %.2f ms (n=%d); near cold p50 %.2f ms max %.2f ms, warm p50 %.2f ms" % (
        label, pct(lats, .5), pct(lats, .99), n, pct(cold, .5), max(cold) * 1000, pct(warm, .5)))
    for c in (s, w, q):
        await c.close(check=False)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
