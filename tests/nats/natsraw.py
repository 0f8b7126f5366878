"""
A minimal blocking NATS client (text protocol, headers) for tests that play
a backend with no client library: core publishes with arbitrary headers and
bytes, including payloads rtgate must drop.
"""
import socket
import time
from urllib.parse import urlparse


class RawNats:
    def __init__(self, url, timeout=5.0):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 4222), timeout=timeout)
        self.buf = b""
        self._read_until(b"\r\n")  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                          b'"protocol":1,"name":"test-backend"}\r\n')
        self.flush()

    def _read_until(self, marker, timeout=5.0):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no %r from nats-server" % marker)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats-server closed the connection")
            self.buf += chunk
            if b"PING\r\n" in self.buf and marker != b"PING\r\n":
                self.buf = self.buf.replace(b"PING\r\n", b"")
                self.sock.sendall(b"PONG\r\n")
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        if b"-ERR" in out:
            raise AssertionError("nats-server said %r" % out)
        return out

    def pub(self, subject, payload, headers=None):
        if isinstance(payload, str):
            payload = payload.encode()
        if headers:
            hdr = b"NATS/1.0\r\n" + b"".join(
                ("%s: %s\r\n" % (k, v)).encode() for k, v in headers.items()) + b"\r\n"
            self.sock.sendall(b"HPUB %s %d %d\r\n" % (subject.encode(), len(hdr),
                                                      len(hdr) + len(payload))
                              + hdr + payload + b"\r\n")
        else:
            self.sock.sendall(b"PUB %s %d\r\n" % (subject.encode(), len(payload)) + payload
                              + b"\r\n")

    def sub(self, subject, sid=1):
        self.sock.sendall(b"SUB %s %d\r\n" % (subject.encode(), sid))
        self.flush()

    def _read_exact(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("short read from nats-server")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats-server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def next_msg(self, timeout=5.0):
        """(subject, headers dict, payload bytes) of the next MSG or HMSG."""
        while True:
            line = self._read_until(b"\r\n", timeout).decode().split()
            if line and line[0] in ("MSG", "HMSG"):
                break
        if line[0] == "MSG":
            size, hlen = int(line[-1]), 0
        else:
            hlen, size = int(line[-2]), int(line[-1])
        body = self._read_exact(size + 2, timeout)[:size]
        headers = {}
        for h in body[:hlen].decode().split("\r\n")[1:]:
            if ":" in h:
                k, _, v = h.partition(":")
                headers[k.strip()] = v.strip()
        return line[1], headers, body[hlen:]

    def flush(self):
        self.sock.sendall(b"PING\r\n")
        self._read_until(b"PONG\r\n")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
