"""
Fixtures for the NATS engine's integration tests: real nats-server processes
(JetStream on, a fresh store dir per test, started and killed by pid here),
rtgate nodes started with --nats, and the rtgate-pub tool.

The rtgate side reuses tests/integration: its `gateway` and `codec` fixtures
(start on a free port, SIGTERM at teardown, fail on a non-zero exit or a
sanitizer report) and rtclient.py. They are imported, not copied; `gateway`
here also waits until a node on NATS is ready (/readyz 200: connected, the
stream checked, which happens in the background after start).

Binaries: RTGATE_BIN (as for tests/integration) and RTGATE_PUB; without
RTGATE_PUB, rtgate-pub is looked up next to rtgate's build (../tools/).
"""
import http.client
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(HERE, "..", "integration")
sys.path.insert(0, INTEGRATION)
sys.path.insert(0, HERE)

_spec = importlib.util.spec_from_file_location("rtgate_integration_conftest",
                                               os.path.join(INTEGRATION, "conftest.py"))
_it = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_it)

base_gateway = _it.gateway  # re-exported fixtures
codec = _it.codec
free_port = _it.free_port

NATS_START_TIMEOUT_S = 15.0
# Test gateways may publish as fast as the tests want.
FAST = ["--pub-rate", "100000", "--pub-burst", "100000", "--msg-rate", "100000",
        "--msg-burst", "100000"]


def nats_server_bin():
    b = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(b, os.X_OK):
        pytest.exit("nats-server is not installed (scripts/setup.sh installs it)", returncode=2)
    return b


def rtgate_pub_bin():
    b = os.environ.get("RTGATE_PUB")
    if b:
        return b
    gw = _it.rtgate_bin()
    p = os.path.join(os.path.dirname(os.path.dirname(gw)), "tools", "rtgate-pub")
    if os.access(p, os.X_OK):
        return p
    pytest.exit("RTGATE_PUB is not set and no rtgate-pub next to %s" % gw, returncode=2)


def http_json(port, path, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read().decode() or "null")
    finally:
        conn.close()


class NatsServer:
    """One nats-server with JetStream, on fixed ports so that it can restart in place."""

    def __init__(self, root, name, cluster_port=None, routes=(), extra=(), scheme="nats"):
        self.name = name
        self.jetstream = True  # False: a server without JetStream (its API has no responders)
        self.extra = list(extra)  # more config lines (tls {...}, authorization {...})
        self.scheme = scheme
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.mon_port = free_port()
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.proc = None
        self.logf = None
        self.starts = 0

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    def _config(self):
        lines = ['server_name: "%s"' % self.name,
                 "listen: 127.0.0.1:%d" % self.port,
                 "http: 127.0.0.1:%d" % self.mon_port]
        if self.jetstream:
            lines.append('jetstream { store_dir: "%s", max_memory_store: 64MB, max_file_store: 1GB }'
                         % os.path.join(self.dir, "js"))
        if self.cluster_port:
            routes = ", ".join("nats-route://127.0.0.1:%d" % p for p in self.routes)
            lines.append('cluster { name: "rtgate-test", listen: 127.0.0.1:%d, routes: [%s] }'
                         % (self.cluster_port, routes))
        lines.extend(self.extra)
        path = os.path.join(self.dir, "nats.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, wait=True):
        for attempt in range(3):
            conf = self._config()
            self.logf = open(os.path.join(self.dir, "nats-server.log"), "ab")
            self.proc = subprocess.Popen([nats_server_bin(), "-c", conf],
                                         stdin=subprocess.DEVNULL, stdout=self.logf,
                                         stderr=subprocess.STDOUT)
            self.starts += 1
            if not wait:
                return self
            try:
                self.wait_healthy()
                return self
            except AssertionError:
                # A free port may be taken between free_port() and the bind (other
                # processes on the machine): a first start (not a clustered one,
                # whose ports the others know) retries on new ports.
                in_use = "address already in use" in self.log()
                if self.starts > attempt + 1 or self.cluster_port or not in_use or attempt == 2:
                    raise
                self.kill()
                self.port = free_port()
                self.mon_port = free_port()
        return self

    def wait_healthy(self, timeout=NATS_START_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nats-server %s exited: %s" % (self.name, self.log()))
            try:
                status, body = http_json(self.mon_port, "/healthz", timeout=1.0)
                if status == 200 and body.get("status") == "ok":
                    return
                last = body
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("nats-server %s not healthy (%s)\n%s" % (self.name, last, self.log()))

    def kill(self, sig=signal.SIGKILL):
        """Stops this server process (by pid) and waits for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.logf:
            self.logf.close()
            self.logf = None

    def restart(self):
        self.kill()
        return self.start()

    def log(self):
        try:
            with open(os.path.join(self.dir, "nats-server.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-5000:]
        except OSError:
            return ""

    def subscriptions(self, gw):
        """The rtgate.* subjects gateway `gw` holds subscriptions on (its nats.c
        connection is named "rtgate <node id>", the loop reader's that reads
        ephemeral channels "rtgate-live <node id>")."""
        _, body = http_json(self.mon_port, "/connz?subs=1&limit=1024")
        out = []
        names = ("rtgate " + gw.node_id, "rtgate-live " + gw.node_id)
        for c in body.get("connections") or []:
            if c.get("name") in names:
                out.extend(s for s in c.get("subscriptions_list") or []
                           if s.startswith("rtgate."))
        return sorted(out)


READY_TIMEOUT_S = 30.0


def wait_ready(g, timeout=READY_TIMEOUT_S):
    """Waits for /readyz 200: NATS, the stream (checked after start) and the loop reader
    are up. Returns g."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if g.http_get("/readyz", timeout=2)[0] == 200:
                return g
        except OSError:
            pass
        assert time.monotonic() < deadline, "rtgate %s not ready within %.0f s\n%s" % (
            g.node_id, timeout, g.log()[-3000:])
        time.sleep(0.05)


@pytest.fixture
def gateway(base_gateway):
    """Factory: gateway(*flags, env=None, ready=True): as tests/integration's,
    and with --nats it waits for /readyz unless ready=False."""

    def start(*flags, env=None, ready=True):
        g = base_gateway(*flags, env=env)
        if ready and "--nats" in [str(f) for f in flags]:
            wait_ready(g)
        return g

    return start


@pytest.fixture
def nats(tmp_path):
    """A single nats-server with JetStream and a fresh store; killed at teardown."""
    srv = NatsServer(str(tmp_path), "n1").start()
    yield srv
    srv.kill()


@pytest.fixture
def nats_server(tmp_path):
    """Factory: nats_server(extra=(config lines), scheme="nats") starts a nats-server with
    JetStream and those lines (tls {...}, authorization {...}); all killed at teardown."""
    started = []

    def start(extra=(), scheme="nats"):
        srv = NatsServer(str(tmp_path), "s%d" % (len(started) + 1), extra=extra, scheme=scheme)
        started.append(srv)
        return srv.start()

    yield start
    for s in started:
        s.kill()


def rtgate_refused(*flags, timeout=30.0):
    """Runs an rtgate that must fail to start; returns (exit code, its log)."""
    argv = [_it.rtgate_bin(), "--listen", "127.0.0.1:%d" % free_port(), *flags]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=env)
    log = (r.stdout + r.stderr).decode("utf-8", "replace")
    for marker in _it.SANITIZER_MARKERS:
        assert marker not in log, log
    return r.returncode, log


@pytest.fixture
def nats_cluster(tmp_path):
    """Three clustered nats-servers (routes on loopback), JetStream on each."""
    cports = [free_port() for _ in range(3)]
    servers = [NatsServer(str(tmp_path), "n%d" % (i + 1), cports[i],
                          [p for j, p in enumerate(cports) if j != i]) for i in range(3)]
    for s in servers:
        s.start(wait=False)
    try:
        for s in servers:
            s.wait_healthy(30)
        wait_meta_leader(servers)
        yield servers
    finally:
        for s in servers:
            s.kill()


def wait_meta_leader(servers, timeout=30.0):
    """Waits until the JetStream meta group of the cluster has a leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in servers:
            try:
                _, body = http_json(s.mon_port, "/jsz")
            except (OSError, ValueError):
                continue
            meta = (body or {}).get("meta_cluster") or {}
            if meta.get("leader"):
                return
        time.sleep(0.1)
    raise AssertionError("no JetStream meta leader in the test cluster")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Keys and tokens for gateways with --jwt-key (tests/integration/tokens.py)."""
    from tokens import KeySet
    return KeySet(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def nodes(gateway):
    """Factory: nodes(urls, n=2, *flags, env=None) starts n rtgate nodes on the NATS engine."""

    def start(urls, n=2, *flags, env=None):
        if not isinstance(urls, str):
            urls = ",".join(urls)
        return [gateway("--nats", urls, "--ephemeral", "eph.>", *FAST, *flags, env=env)
                for _ in range(n)]

    return start


def run_rtgate_pub(args, stdin=None, env=None):
    """Runs rtgate-pub with args; returns the CompletedProcess (no sanitizer report allowed)."""
    env = dict(os.environ if env is None else env, ASAN_OPTIONS="detect_leaks=1")
    r = subprocess.run([rtgate_pub_bin()] + list(args), input=stdin, capture_output=True,
                       timeout=30, env=env)
    assert b"Sanitizer" not in r.stderr, r.stderr.decode()
    return r


def pub_output(r):
    """rtgate-pub's stdout as a dict ({"seq": N, "dup": bool})."""
    assert r.returncode == 0, "rtgate-pub failed (%d): %s" % (r.returncode, r.stderr.decode())
    out = {}
    for tok in r.stdout.decode().split():
        k, _, v = tok.partition("=")
        out[k] = int(v) if v.isdigit() else (v == "true")
    return out


def rtgate_pub(url, channel, data=None, msg_id=None, encoding=None, ephemeral=False,
               stdin=None, flags=()):
    """Runs rtgate-pub; returns its stdout parsed into a dict ({"seq": N, "dup": bool}).
    flags: more options (--nats-ca FILE, --nats-creds FILE, ...)."""
    argv = ["--nats", url, *flags]
    if msg_id is not None:
        argv += ["--msg-id", msg_id]
    if encoding:
        argv += ["--encoding", encoding]
    if ephemeral:
        argv.append("--ephemeral")
    argv.append(channel)
    if data is not None:
        argv.append(data)
    return pub_output(run_rtgate_pub(argv, stdin=stdin))
