"""A durable channel that goes quiet is probed once (a JetStream read) in
case its last live message was lost: nothing else would reveal it. With
many channels that each go quiet between messages, the probes share a
budget (100 a second, docs/nats.md): here 600 channels go quiet at once;
they are not all probed at once, and every one of them is probed in the
end."""
import asyncio
import time

from conftest import FAST
from rtclient import Client, run

N = 600


async def connected(url, **kw):
    c = Client(url, "json", **kw)
    await c.open()
    await c.connect()
    return c


def probes(g):
    return g.metrics().get("rtgate_upstream_quiet_probes_total", 0)


def test_quiet_channels_are_probed_within_a_budget(nats, gateway):
    g = gateway("--nats", nats.url, "--ephemeral", "eph.>", "--max-subs", "1000", *FAST)
    got = {}

    async def go():
        sub = await connected(g.url(), name="sub", auto_ack=True, max_queue=2**12)
        pubc = await connected(g.url(), name="pub")
        try:
            rs = await sub.requests([("sub", {"channel": "dur.q%d" % i}) for i in range(N)],
                                    timeout=60)
            assert all(r["ok"] for r in rs)
            assert probes(g) == 0
            got["pub_start"] = time.monotonic()  # no channel went live before this
            rs = await pubc.requests([("pub", {"channel": "dur.q%d" % i, "data": i})
                                      for i in range(N)], timeout=60)
            assert all(r["ok"] for r in rs)
            msgs = await sub.collect(N, timeout=30)
            last_live = time.monotonic()
            assert sorted(m["data"] for m in msgs) == list(range(N))
            # Due from ~2 s after each channel's message: at 2.5 s, a budget
            # of 100/s (burst 100) allows ~150-200 probes, not 600.
            await asyncio.sleep(max(0.0, last_live + 2.5 - time.monotonic()))
            got["early"] = probes(g)
            got["early_at"] = time.monotonic()
            deadline = time.monotonic() + 15
            while probes(g) < N and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            got["late"] = probes(g)
            got["late_at"] = time.monotonic()
            assert await sub.quiet(0.3) == []  # a probe finds nothing new: delivers nothing
        finally:
            await sub.close()
            await pubc.close()

    run(go(), 120)
    # The first channel was due 2 s after pub_start at the earliest; since
    # then the budget allowed 100 (burst) + 100 a second (+ slack for ticks).
    allowed = 100 + 100 * max(0.0, got["early_at"] - got["pub_start"] - 2.0) + 40
    assert 0 < got["early"] <= allowed, (got, allowed)
    assert got["late"] == N, got  # every quiet channel probed, once
    # 600 at 100 a second after a burst of 100: 5 s after the first was due.
    assert got["late_at"] - got["pub_start"] > 2.0 + 4.5, got
