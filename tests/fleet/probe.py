"""
A probe of one gateway's responsiveness, in a process of its own so that it
measures the gateway, not the test's clients: a few subscribers and a
publisher on one durable channel, connected to the gateway directly (never
dropped by what happens to the others), and a poller of its /metrics.

    probe.py WS_URL HTTP_URL CHANNEL N_SUBS RATE OUT_PREFIX

Writes OUT_PREFIX.lat ("t_monotonic age_ms" per delivery: receive time minus
the message's ts) and OUT_PREFIX.metrics ("t_monotonic loop_busy_seconds
connections_total refused_node_rate" every 250 ms), until SIGTERM.
time.monotonic is CLOCK_MONOTONIC, shared with the test process.
"""
import asyncio
import json
import signal
import sys
import time
import urllib.request

import websockets

SUBPROTOCOL = "rtgate.v1.json"


async def subscriber(url, channel, out):
    ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL], compression=None,
                                  ping_interval=None)
    await ws.send('{"type":"connect","id":1}')
    await ws.send(json.dumps({"type": "sub", "id": 2, "channel": channel}))
    async for frame in ws:
        top = 0
        for line in frame.split("\n"):
            if '"type":"msg"' in line:
                m = json.loads(line)
                out.write("%.4f %.2f\n" % (time.monotonic(), time.time() * 1000.0 - m["ts"]))
                top = max(top, m["seq"])
        if top:
            await ws.send('{"type":"ack","channel":"%s","seq":%d}' % (channel, top))


async def publisher(url, channel, rate):
    ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL], compression=None,
                                  ping_interval=None)
    await ws.send('{"type":"connect","id":0}')

    async def drain():  # the replies are not needed
        async for _ in ws:
            pass
    reader = asyncio.ensure_future(drain())
    i, nxt = 1, time.monotonic()
    while not reader.done():
        await ws.send(json.dumps({"type": "pub", "id": i, "channel": channel, "data": i}))
        i += 1
        nxt += 1.0 / rate
        await asyncio.sleep(max(0.0, nxt - time.monotonic()))


def scrape(http_url):
    with urllib.request.urlopen(http_url + "/metrics", timeout=2) as r:
        body = r.read().decode()
    want = {"rtgate_loop_busy_seconds_total": 0.0, "rtgate_connections_total": 0.0,
            'rtgate_handshakes_refused_total{cause="node_rate"}': 0.0}
    for line in body.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("rtgate_connections_total{transport="):
            name = "rtgate_connections_total"  # summed over the transports
            want[name] += float(value)
        elif name in want:
            want[name] = float(value)
    return list(want.values())


async def poller(http_url, out):
    loop = asyncio.get_running_loop()
    while True:
        try:
            busy, conns, refused = await loop.run_in_executor(None, scrape, http_url)
            out.write("%.4f %.6f %d %d\n" % (time.monotonic(), busy, conns, refused))
        except OSError:
            pass
        await asyncio.sleep(0.25)


async def main(ws_url, http_url, channel, n_subs, rate, prefix):
    lat = open(prefix + ".lat", "w", buffering=1)
    met = open(prefix + ".metrics", "w", buffering=1)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.ensure_future(subscriber(ws_url, channel, lat)) for _ in range(n_subs)]
    await asyncio.sleep(1)
    tasks.append(asyncio.ensure_future(publisher(ws_url, channel, rate)))
    tasks.append(asyncio.ensure_future(poller(http_url, met)))
    await stop.wait()
    for t in tasks:
        t.cancel()
    lat.close()
    met.close()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), float(a[4]), a[5]))
