"""
Fixtures for the fleet tests: the recipe's fleet on loopback
(docker/local-fleet.sh: 3 nats-server, 2 rtgate, haproxy) and a population of
self-checking clients (fleetclient.py) on an asyncio loop of its own thread,
so that the fleet and the clients live across the module's tests, which run
one scenario after the other on them.

RTGATE_BIN names the gateway (the ctest entry sets it); FLEET_CLIENTS,
FLEET_CHANNELS and FLEET_RATE size the population (defaults 2000, 40, 1 msg/s
per channel); FLEET_RESULTS names a JSON file for the measurements.
"""
import asyncio
import http.client
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import urllib.parse

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
LOCAL_FLEET = os.path.join(ROOT, "docker", "local-fleet.sh")
sys.path.insert(0, HERE)

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Fleet:
    """A running local fleet: its fleet.env, and the nodes by number."""

    def __init__(self, root):
        self.dir = root
        self.env = {}
        self.reload()

    def reload(self):
        env = {}
        with open(os.path.join(self.dir, "fleet.env")) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    k, _, v = line.partition("=")
                    env[k] = " ".join(shlex.split(v))
        self.env = env

    def script(self, *args, timeout=120):
        r = subprocess.run([LOCAL_FLEET, *args], capture_output=True, timeout=timeout,
                           env=fleet_env())
        assert r.returncode == 0, "local-fleet.sh %s failed:\n%s%s" % (
            " ".join(args), r.stdout.decode(), r.stderr.decode())
        self.reload()

    @staticmethod
    def gone(pid):
        """True once pid has exited (a zombie not yet reaped by init counts as gone)."""
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
        except OSError:
            return True

    def pids(self, kind):
        return [int(p) for p in self.env[kind.upper() + "_PIDS"].split()]

    def gateway_url(self, n):
        return self.env["GATEWAY_URLS"].split()[n - 1]

    def node_id(self, n):
        return self.env["GATEWAY_NODE_IDS"].split()[n - 1]

    def get(self, url, path, timeout=5.0):
        u = urllib.parse.urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def metrics(self, n):
        status, body = self.get(self.gateway_url(n), "/metrics")
        assert status == 200
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
                # Families labelled by transport, also summed over the transports.
                bare = re.sub(r'transport="[^"]*",?', "", name).replace(",}", "}").replace("{}", "")
                if bare != name:
                    out[bare] = out.get(bare, 0.0) + float(value)
        return out

    def stream_leader(self):
        """The name of the NATS server leading the durable channels' stream, or None."""
        for url in self.env["NATS_MONITOR_URLS"].split():
            try:
                _, body = self.get(url, "/jsz?accounts=true&streams=true", timeout=2)
                for acc in json.loads(body).get("account_details") or []:
                    for st in acc.get("stream_detail") or []:
                        leader = (st.get("cluster") or {}).get("leader")
                        if st.get("name") == "RTGATE" and leader:
                            return leader
            except (OSError, ValueError):
                continue
        return None

    def logs(self, name):
        try:
            with open(os.path.join(self.dir, "logs", name + ".log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def fleet_env():
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1"
    return env


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if not os.environ.get("RTGATE_BIN"):
        pytest.exit("RTGATE_BIN is not set (the ctest entry sets it)", returncode=2)
    root = str(tmp_path_factory.mktemp("fleet"))
    r = subprocess.run([LOCAL_FLEET, "up", root], capture_output=True, timeout=180,
                       env=fleet_env())
    if r.returncode != 0:
        subprocess.run([LOCAL_FLEET, "down", root], capture_output=True, timeout=120)
        raise AssertionError("local-fleet.sh up failed:\n%s%s"
                             % (r.stdout.decode(), r.stderr.decode()))
    f = Fleet(root)
    try:
        yield f
    finally:
        subprocess.run([LOCAL_FLEET, "down", root], capture_output=True, timeout=120)
        for name in ("gateway-1", "gateway-2"):
            log = f.logs(name)
            for marker in SANITIZER_MARKERS:
                assert marker not in log, "%s in %s's log:\n%s" % (marker, name, log[-5000:])


class LoopThread:
    """An asyncio loop on its own thread: the population outlives each test."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def results():
    """Measurements of the module's scenarios, printed and written at the end."""
    out = {}
    yield out
    path = os.environ.get("FLEET_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2, sort_keys=True)
    print("\n=== fleet results ===\n" + json.dumps(out, indent=2, sort_keys=True))
