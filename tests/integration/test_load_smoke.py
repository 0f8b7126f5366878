"""Load smoke: rtgate-load against the real gateway, small N, a few seconds.

Fails if any message is lost, duplicated or reordered, or a request errors;
the numbers themselves are not judged here (BENCHMARKS.md is for that).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

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


def test_publisher_behind_sends_at_most_100_messages_a_frame(gateway):
    """A publisher that falls behind has many slots due at once: the tool is
    stopped (SIGSTOP, its whole process group) for 0.4 s at 5000 messages/s,
    so about 2000 small messages are due when it resumes. Its frames must hold
    at most 100 messages each (the gateway answers a frame of more with 400,
    docs/protocol.md), and nothing may be lost. Failed before the count cap:
    the byte cap alone put about 300 of these messages in a frame."""
    g = gateway(*UNLIMITED, "--ephemeral", "eph.>")
    argv = [LOAD, "--url", g.url(), "--scenario", "fanout", "--subs", "2", "--rate", "5000",
            "--payload", "16", "--duration", "2", "--warmup", "0.2", "--timeout", "60",
            "--channel-prefix", "eph"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        head = []  # its stderr up to "...; running": the connections are ready, slots start
        while not head or "running" not in head[-1]:
            head.append(p.stderr.readline())
            assert head[-1], "rtgate-load ended before running: %s" % "".join(head)
        time.sleep(0.6)  # inside the 2.2 s of publishing, with 1.6 s to spare
        os.killpg(p.pid, signal.SIGSTOP)
        time.sleep(0.4)
        os.killpg(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    lines = [l for l in out.splitlines() if l.startswith("{")]
    assert lines, "rtgate-load printed no JSON (rc %d): %s" % (p.returncode, err[-2000:])
    r = json.loads(lines[-1])
    assert r["detail"]["publish_lag_max_us"] > 300e3, r  # the stop did make it fall behind
    assert "400" not in r["detail"]["error_codes"], r
    assert r["published"] > 0 and r["delivered"] == r["expected"] == 2 * r["published"], r
    assert (r["lost"], r["dup"], r["ooo"], r["errors"]) == (0, 0, 0, 0), r


def run_scen(g, *args):
    """The single-process scenarios (presence, churn, storm): the same JSON line, own fields."""
    argv = [LOAD, "--url", g.url(), "--timeout", "60", "--server-pid", str(g.pid), "-q"] + list(args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, "rtgate-load printed no JSON (rc %d): %s" % (p.returncode, p.stderr[-2000:])
    return p.returncode, json.loads(lines[-1])


PRESENCE = ("--geo-rate", "1000", "--geo-burst", "1000", "--msg-rate", "100000",
            "--msg-burst", "100000", "--ip-conn-rate", "0")


def test_presence_smoke_sets_near_watch(gateway):
    g = gateway(*PRESENCE)
    # 2 km square: 50 walkers are dense enough that near finds members and watches see events
    rc, r = run_scen(g, "--scenario", "presence", "--setters", "50", "--set-rate", "200",
                     "--queriers", "3", "--query-rate", "30", "--watchers", "3",
                     "--area-km", "2", "--radius-m", "500", "--watch-radius-m", "800",
                     "--duration", "2", "--warmup", "0.5")
    assert r["connected"] == 56, r
    assert r["sets"]["ok"] == r["sets"]["sent"] > 0 and r["sets"]["rate_limited"] == 0, r
    assert r["queries"]["ok"] == r["queries"]["sent"] > 0 and r["queries"]["rate_limited"] == 0, r
    assert r["set_latency_us"]["count"] > 0 and r["near_latency_us"]["count"] > 0, r
    assert r["queries"]["members_mean"] > 0, r
    assert r["watch"]["ok"] == 3 and r["watch"]["move"] > 0, r
    assert r["event_latency_us"]["count"] > 0 and r["watch"]["no_meta_t"] == 0, r
    assert r["detail"]["no_reply"] == 0 and r["errors"] == 0, r
    assert rc == 0 and r["ok"] is True, r


def test_presence_smoke_reports_geo_rate_limit(gateway):
    g = gateway("--geo-rate", "5", "--geo-burst", "5", "--ip-conn-rate", "0")
    rc, r = run_scen(g, "--scenario", "presence", "--setters", "2", "--set-rate", "40",
                     "--queriers", "0", "--query-rate", "0", "--duration", "1", "--warmup", "0")
    assert r["sets"]["rate_limited"] > 0 and r["conn"]["error_codes"].get("429", 0) > 0, r
    assert r["detail"]["skipped_backoff"] > 0, r  # retry_after_ms honoured
    assert r["errors"] == 0, r


def test_churn_smoke(gateway):
    g = gateway("--ip-conn-rate", "0")
    rc, r = run_scen(g, "--scenario", "churn", "--rate", "100", "--duration", "2",
                     "--warmup", "0.5")
    assert r["measured_completed"] == r["measured_started"] > 150, r
    assert (r["failed"], r["lost"], r["skipped_pool"], r["errors"]) == (0, 0, 0, 0), r
    assert r["setup_latency_us"]["count"] == r["measured_completed"], r
    assert rc == 0 and r["ok"] is True, r


def test_storm_smoke_refusals_retried(gateway):
    # A small per-IP handshake bucket: the reconnects are refused (429) and retried.
    g = gateway("--ip-conn-rate", "100", "--ip-conn-burst", "100")
    rc, r = run_scen(g, "--scenario", "storm", "--subs", "150", "--connect-rate", "80",
                     "--hold", "0.5")
    assert r["ready_initially"] == 150 and r["dropped"] == 150, r
    assert r["back"] == 150 and r["failed"] == 0 and r["all_back_s"] > 0, r
    assert r["refused"] > 0 and r["retries"] == r["refused"], r
    assert r["reconnect_us"]["count"] == 150, r
    assert rc == 0 and r["ok"] is True, r


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nats_url(tmp_path):
    """A nats-server with JetStream on a free loopback port, killed (by pid) at teardown."""
    b = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(b, os.X_OK):
        pytest.skip("nats-server is not installed")
    port = _free_port()
    with open(tmp_path / "nats-server.log", "wb") as log:
        proc = subprocess.Popen([b, "-js", "-a", "127.0.0.1", "-p", str(port), "--store_dir",
                                 str(tmp_path / "js")], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.1)
        yield "nats://127.0.0.1:%d" % port
    finally:
        proc.kill()
        proc.wait()


def test_presence_smoke_across_two_nodes(gateway, nats_url):
    """Setters on node A, queriers and watchers on node B: sets reach B over NATS."""
    a = gateway("--nats", nats_url, *PRESENCE)
    b = gateway("--nats", nats_url, *PRESENCE)
    rc, r = run_scen(a, "--url2", b.url(), "--scenario", "presence", "--setters", "50",
                     "--set-rate", "200", "--queriers", "3", "--query-rate", "30",
                     "--watchers", "3", "--area-km", "2", "--radius-m", "500",
                     "--watch-radius-m", "800", "--duration", "2", "--warmup", "0.5")
    assert r["url2"] == b.url() and r["watch"]["cross_node"] is True, r
    assert r["connected"] == 56 and r["errors"] == 0, r
    assert r["queries"]["members_mean"] > 0, r  # B's near sees A's members
    assert r["watch"]["ok"] == 3 and r["event_latency_us"]["count"] > 0, r  # A's sets reach B
    assert rc == 0 and r["ok"] is True, r
