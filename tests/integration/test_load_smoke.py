"""Load smoke: rtgate-load against the real gateway, small N, a few seconds.

Fails if any message is lost, duplicated or reordered, or a request errors;
the numbers themselves are not judged here (BENCHMARKS.md is for that).
"""
import json
import os
import subprocess

import pytest

LOAD = os.environ.get("RTGATE_LOADTEST")

pytestmark = pytest.mark.skipif(not LOAD or not os.access(LOAD, os.X_OK),
                                reason="RTGATE_LOADTEST (the rtgate-load binary) not given")

UNLIMITED = ("--pub-rate", "100000", "--pub-burst", "100000", "--msg-rate", "100000",
             "--msg-burst", "100000", "--ip-conn-rate", "0")


def run_load(g, *args):
    argv = [LOAD, "--url", g.url(), "--duration", "2", "--warmup", "0.5", "--timeout", "60",
            "--server-pid", str(g.pid), "-q"] + list(args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, "rtgate-load printed no JSON (rc %d): %s" % (p.returncode, p.stderr[-2000:])
    r = json.loads(lines[-1])
    return p.returncode, r


@pytest.mark.parametrize("subprotocol", ["json", "msgpack"])
@pytest.mark.parametrize("durable", [False, True])
def test_fanout_smoke_no_loss_no_dup(gateway, subprotocol, durable):
    g = gateway(*UNLIMITED, "--ephemeral", "eph.>")
    rc, r = run_load(g, "--scenario", "fanout", "--subs", "50", "--rate", "100",
                     "--subprotocol", subprotocol,
                     "--channel-prefix", "dur" if durable else "eph")
    assert r["published"] > 0 and r["expected"] == r["published"] * 50, r
    assert r["delivered"] == r["expected"], r
    assert (r["lost"], r["dup"], r["ooo"], r["errors"]) == (0, 0, 0, 0), r
    assert rc == 0 and r["ok"] is True, r


def test_channels_smoke_no_loss(gateway):
    g = gateway(*UNLIMITED, "--ephemeral", "eph.>")
    rc, r = run_load(g, "--scenario", "channels", "--subs", "200", "--channels", "200",
                     "--rate", "200", "--channel-prefix", "eph")
    assert r["delivered"] == r["expected"] > 0, r
    assert (r["lost"], r["dup"], r["ooo"], r["errors"]) == (0, 0, 0, 0), r
    assert rc == 0, r
