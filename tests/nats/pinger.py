"""
An rtgate client in a process of its own that measures `ping` round trips:
it connects, prints "ready", then sends {"type":"ping"} every INTERVAL
seconds and times each pong until a line (or EOF) comes on stdin, and
prints the round trips in ms as one JSON line ({"rtt_ms": [...], "lost": N}).

A process of its own, so that the test's other clients (their decoding,
their asyncio loop) do not add to what is measured.

usage: pinger.py WS_URL [INTERVAL]
"""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from rtclient import Client  # noqa: E402

PONG_TIMEOUT_S = 10.0


async def main(url, interval):
    c = Client(url, "json", name="pinger")
    await c.open()
    await c.connect()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    print("ready", flush=True)
    rtts, lost = [], 0
    while not stop.is_set():
        t0 = time.monotonic()
        await c.ping()
        try:
            await c.next_event(("pong",), timeout=PONG_TIMEOUT_S)
            rtts.append((time.monotonic() - t0) * 1000.0)
        except asyncio.TimeoutError:
            lost += 1
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
    await c.close()
    print(json.dumps({"rtt_ms": rtts, "lost": lost}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.01))
