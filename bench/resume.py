"""Time to resume 1000 missed messages on a durable channel: sub with since
and epoch, until the 1000th replayed msg arrives. Prints one JSON line."""
import asyncio, json, sys, time
import os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from rtclient import Client
url, n = sys.argv[1], int(sys.argv[2])
async def main():
    async with Client(url, "json") as s, Client(url, "json") as p:
        await s.connect(); await p.connect()
        await p.pub("bench.resume", {"i": -1})  # history keeps the channel (and its epoch) alive
        r = await s.sub("bench.resume"); epoch, since = r["epoch"], r["seq"]
        await s.unsub("bench.resume")
        for i in range(n):
            rr = await p.pub("bench.resume", {"i": i})
            assert rr["ok"], rr
        t0 = time.monotonic()
        r = await s.sub("bench.resume", since=since, epoch=epoch)
        assert r["recovered"] is True, r
        got = await s.collect(n, timeout=60)
        dt = time.monotonic() - t0
        assert [m["data"]["i"] for m in got] == list(range(n))
        print(json.dumps({"url": url, "missed": n, "resume_s": round(dt, 4), "per_msg_us": round(dt / n * 1e6, 1)}))
asyncio.run(main())
