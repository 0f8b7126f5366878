"""
Tools of the edge tests (test_edge_*.py): raw HTTP/WebSocket handshakes from
a chosen local address, with an optional PROXY v2 header and TLS; hand-made
WebSocket frames; test certificates; the steady stream that must keep
flowing while a test attacks the gateway (edge_stream.py, its own process);
and the RSS check.
"""
import base64
import ipaddress
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# What "keeps flowing" means: a subscriber getting 10 messages a second never
# waits longer than this between two of them while a test attacks the node.
# Generous, because CI shares two cores between many jobs; a starved loop
# stalls for the whole attack (many seconds), far past it.
STREAM_MAX_GAP_MS = 2000.0

# RSS after an attack may exceed the level measured after a warm-up round of
# the same attack by this much (allocator caches and fragmentation, ASan's
# 1 MiB quarantine; five rounds of the slowloris test stay within 1.3 MiB of
# each other): a leak or an unbounded buffer per hostile connection, over
# hundreds of them, grows past it.
RSS_SLACK_KB = 8 * 1024

# The gateway's sanitizer settings for tests that read RSS: ASan's default
# quarantine (256 MiB of freed memory kept back) would make RSS follow the
# bytes ever allocated instead of the bytes held.
SMALL_ASAN = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=1"}

PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2_header(src, dst, sport, dport, command=1, tlvs=b""):
    """A PROXY protocol v2 header (haproxy's send-proxy-v2) for TCP."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4 and d.version == 4:
        fam, body = 0x11, s.packed + d.packed + struct.pack(">HH", sport, dport)
    else:
        s6 = s if s.version == 6 else ipaddress.IPv6Address("::ffff:" + str(s))
        d6 = d if d.version == 6 else ipaddress.IPv6Address("::ffff:" + str(d))
        fam, body = 0x21, s6.packed + d6.packed + struct.pack(">HH", sport, dport)
    body += tlvs
    return PROXY_V2_SIG + bytes([0x20 | command, fam]) + struct.pack(">H", len(body)) + body


def connect_from(port, src="127.0.0.1", timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def upgrade_request(port, path="/ws", headers=None):
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
           % (path, port, key))
    for k, v in (headers or {}).items():
        req += "%s: %s\r\n" % (k, v)
    return (req + "\r\n").encode()


def read_response(s, timeout=5.0):
    """(status, headers, body) of one HTTP response; status 0 if the server
    closed without answering."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            return 0, {}, b""
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(body) < n and time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def handshake(port, headers=None, src="127.0.0.1", prefix=b"", tls=None, path="/ws",
              timeout=5.0):
    """A WebSocket upgrade request from src, after `prefix` (a PROXY header)
    and through TLS when `tls` is an SSLContext. Returns (status, headers,
    body, socket); the socket stays open for the caller to close."""
    s = connect_from(port, src, timeout)
    if prefix:
        s.sendall(prefix)
    if tls is not None:
        s = tls.wrap_socket(s, server_hostname="localhost")
    s.sendall(upgrade_request(port, path, headers))
    status, hdrs, body = read_response(s, timeout)
    return status, hdrs, body, s


def closed_by_peer(s, timeout):
    """True when the server closes the connection within timeout (reading and
    discarding whatever it sends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not s.recv(4096):
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            return True
    return False


def frame(opcode, payload=b"", fin=True, masked=True, rsv=0, length=None):
    """One client WebSocket frame, as hostile as asked."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def server_frames(data):
    """(opcode, payload) of each whole (unmasked, server) frame in data."""
    i = 0
    while i + 2 <= len(data):
        op, n, j = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if n == 126:
            n, j = struct.unpack(">H", data[j:j + 2])[0], j + 2
        elif n == 127:
            n, j = struct.unpack(">Q", data[j:j + 8])[0], j + 8
        if j + n > len(data):
            return
        yield op, data[j:j + n]
        i = j + n


def close_code_of(data):
    """The status code of the first close frame the server sent in data, 1005
    for a close frame without one, None when there is no close frame."""
    for op, payload in server_frames(data):
        if op == 8:
            return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


def make_cert(directory, name, cn="localhost", kind="ec"):
    """A self-signed certificate for localhost and 127.0.0.1 (openssl CLI);
    returns (cert_path, key_path)."""
    cert, key = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" \
        else ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def client_tls(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx


class Stream:
    """edge_stream.py against a gateway, in its own process."""

    def __init__(self, url, cafile=None, proxy_from=None, interval_ms=100):
        argv = [sys.executable, os.path.join(HERE, "edge_stream.py"), url,
                "--interval-ms", str(interval_ms)]
        if cafile:
            argv += ["--cafile", cafile]
        if proxy_from:
            argv += ["--proxy-from", proxy_from]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            self.proc.kill()
            raise AssertionError("the stream did not start: %s"
                                 % self.proc.stderr.read().decode(errors="replace"))
        self.stats = None

    def stop(self):
        """Stops the stream; returns its stats (sent, received, max_gap_ms...)."""
        if self.stats is None:
            self.proc.stdin.close()
            try:
                out = self.proc.stdout.read()
                err = self.proc.stderr.read()
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError("the stream did not stop")
            lines = out.decode().strip().splitlines()
            if self.proc.returncode != 0 or not lines:
                raise AssertionError("the stream failed: %s" % err.decode(errors="replace"))
            self.stats = json.loads(lines[-1])
        return self.stats

    def check(self, what):
        """Stops the stream and asserts it kept flowing during `what`."""
        st = self.stop()
        assert st["sent"] >= 10, (what, st)
        assert st["received"] >= st["sent"] - 2, \
            "deliveries were lost during %s: %s" % (what, st)
        assert st["max_gap_ms"] < STREAM_MAX_GAP_MS, \
            "deliveries stalled during %s: %s" % (what, st)
        return st

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.stats is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except Exception:
                self.proc.kill()


def wait_for(cond, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def settled_rss_kb(gw, quiet_s=1.0):
    """The gateway's RSS once it stopped changing by more than 1 MiB for
    quiet_s (at most 10 s)."""
    last = gw.rss_kb()
    t_end = time.monotonic() + 10.0
    stable_since = time.monotonic()
    while time.monotonic() < t_end:
        time.sleep(0.2)
        now = gw.rss_kb()
        if abs(now - last) > 1024:
            stable_since = time.monotonic()
            last = now
        elif time.monotonic() - stable_since >= quiet_s:
            return now
    return gw.rss_kb()


def assert_rss_back(gw, baseline_kb, what):
    rss = settled_rss_kb(gw)
    assert rss <= baseline_kb + RSS_SLACK_KB, \
        "RSS %d KiB after %s, %d KiB after the warm-up round (slack %d KiB)" \
        % (rss, what, baseline_kb, RSS_SLACK_KB)
    return rss


# Flags every edge test gateway gets: the stream's channel keeps no history,
# so the RSS it leaves behind does not grow with the test's length.
STREAM_FLAGS = ("--ephemeral", "edge.>")


def attack_checked(gw, attack, what, stream_url=None, cafile=None, proxy_from=None):
    """Runs attack() twice: a warm-up round, after which the RSS baseline is
    read, then again while a steady stream flows through the gateway. Asserts
    the stream kept flowing and RSS came back to the baseline (the fixture
    checks the sanitizers at teardown). Returns the stream's stats."""
    attack()
    baseline = settled_rss_kb(gw)
    stream = Stream(stream_url or gw.url(), cafile=cafile, proxy_from=proxy_from)
    with stream:
        started = time.monotonic()
        attack()
        time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))  # >= 20 deliveries to judge
        stats = stream.check(what)
    rss = assert_rss_back(gw, baseline, what)
    print("edge: %s: stream %s, RSS %d KiB after the warm-up, %d KiB after"
          % (what, stats, baseline, rss))
    return stats
