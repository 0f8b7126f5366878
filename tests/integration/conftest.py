"""
Fixtures for rtgate's integration tests: start the real binary on a free
loopback port, wait for /healthz, and at teardown stop it with SIGTERM and
fail the test on a non-zero exit or on any sanitizer report in its log.

RTGATE_BIN names the binary (the ctest entry sets it); without it the tests
look for build-it/ then build/ under the project root.
"""
import http.client
import itertools
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0

_node_counter = itertools.count(1)


def rtgate_bin():
    b = os.environ.get("RTGATE_BIN")
    if b:
        if not os.access(b, os.X_OK):
            pytest.exit("RTGATE_BIN=%s is not an executable file (build the rtgate target)" % b,
                        returncode=2)
        return b
    for d in ("build-it", "build"):
        p = os.path.join(ROOT, d, "gateway", "rtgate")
        if os.access(p, os.X_OK):
            return p
    pytest.exit("RTGATE_BIN is not set and no built rtgate was found", returncode=2)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


_TRANSPORT_LABEL = re.compile(r'transport="[^"]*",?')


def parse_metrics(body):
    """The samples of a /metrics text as {name_with_labels: float}. A sample
    labelled by transport is also summed over the transports under its name
    without that label (rtgate_connections, rtgate_closes_total{code="1000",
    by="client"}): what those families said before sessions had transports."""
    out, sums = {}, {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
        bare = _TRANSPORT_LABEL.sub("", name).replace(",}", "}").replace("{}", "")
        if bare != name:
            sums[bare] = sums.get(bare, 0.0) + float(value)
    out.update(sums)
    return out


class Gateway:
    """One running rtgate process."""

    def __init__(self, flags, log_path, env_extra=None):
        self.flags = list(flags)
        self.log_path = log_path
        self.node_id = "test-%d" % next(_node_counter)
        self.port = None
        self.proc = None
        self.env_extra = dict(env_extra or {})
        self.expected_rc = 0
        self.checked = False
        # With --tls-cert (self-signed in the tests) the probes speak TLS and
        # trust that certificate.
        flags = [str(f) for f in self.flags]
        self.tls_ca = flags[flags.index("--tls-cert") + 1] if "--tls-cert" in flags else None
        # With --proxy-protocol v2 the probes come first with a PROXY v2 LOCAL
        # header, as a load balancer's health checks do.
        self.proxy_v2 = "--proxy-protocol" in flags and \
            flags[flags.index("--proxy-protocol") + 1] == "v2"

    # -- life cycle --------------------------------------------------------
    def start(self):
        last_err = None
        for _attempt in range(3):  # the free port may be taken in between: retry
            if self.proc is not None:
                self.logf.close()
            self.port = free_port()
            argv = [rtgate_bin(), "--listen", "127.0.0.1:%d" % self.port,
                    "--node-id", self.node_id] + [str(f) for f in self.flags]
            env = dict(os.environ)
            env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
            env["UBSAN_OPTIONS"] = "print_stacktrace=1"
            env.update(self.env_extra)
            self.logf = open(self.log_path, "ab")
            self.logf.write(("### argv: %s\n" % " ".join(argv)).encode())
            self.logf.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                         stderr=subprocess.STDOUT, env=env)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if self.http_get("/healthz", timeout=1.0)[0] == 200:
                        return self
                except OSError as e:
                    last_err = e
                time.sleep(0.05)
            if self.proc.poll() is None:
                self._kill()
                raise AssertionError("rtgate did not answer /healthz 200 within %.0f s (%s)\n%s"
                                     % (START_TIMEOUT_S, last_err, self.log()))
            if "listen_failed" not in self.log():
                raise AssertionError("rtgate exited with %s at start\n%s"
                                     % (self.proc.returncode, self.log()))
        raise AssertionError("rtgate could not listen\n" + self.log())

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # by pid: Popen.kill sends SIGKILL to this child only
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def sigterm(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout):
        """Waits for the process to exit; returns its code, or None on timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop_and_check(self):
        """SIGTERM, wait, then the checks every test gets. Returns a list of problems."""
        if self.checked or self.proc is None:
            return []
        self.checked = True
        problems = []
        try:
            if self.alive():
                self.proc.send_signal(signal.SIGTERM)
            rc = self.wait_exit(STOP_TIMEOUT_S)
            if rc is None:
                problems.append("rtgate (pid %d) did not exit within %.0f s of SIGTERM"
                                % (self.proc.pid, STOP_TIMEOUT_S))
            elif rc != self.expected_rc:
                problems.append("rtgate exited with code %d, expected %d" % (rc, self.expected_rc))
        finally:
            self._kill()
            self.logf.close()
        log = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                problems.append("sanitizer report in the rtgate log: %r" % marker)
        if problems:
            problems.append("--- rtgate log (%s) ---\n%s" % (self.log_path, log[-20000:]))
        return problems

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- HTTP and process probes ------------------------------------------
    def url(self, path="/ws"):
        return "%s://127.0.0.1:%d%s" % ("wss" if self.tls_ca else "ws", self.port, path)

    def http_get(self, path, timeout=5.0):
        """Returns (status, headers dict lower-cased, body str)."""
        if self.tls_ca:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        if self.proxy_v2:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            s.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")  # PROXY v2 LOCAL
            conn.sock = ctx.wrap_socket(s, server_hostname="127.0.0.1") if self.tls_ca else s
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read().decode("utf-8", "replace")
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            conn.close()

    def metrics(self):
        """The /metrics samples as {name_with_labels: float}; see parse_metrics."""
        status, _, body = self.http_get("/metrics")
        assert status == 200, "GET /metrics answered %d" % status
        return parse_metrics(body)

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.proc.pid)


@pytest.fixture
def gateway(tmp_path):
    """Factory: gateway(*flags, env=None) starts one rtgate and returns a Gateway.

    Every gateway started is stopped at teardown (SIGTERM, <= 15 s) and the
    test fails if it did not exit 0 or its log has a sanitizer report."""
    started = []

    def start(*flags, env=None):
        g = Gateway(flags, str(tmp_path / ("rtgate-%d.log" % len(started))), env)
        started.append(g)
        return g.start()

    yield start
    problems = []
    for g in started:
        try:
            problems.extend(g.stop_and_check())
        except Exception as e:  # keep stopping the others
            problems.append("teardown of %s failed: %r" % (g.node_id, e))
            g._kill()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(params=["json", "msgpack"])
def codec(request):
    return request.param
