"""
A client of rtgate's server API (docs/api.md) for the tests: one HTTP/1.1
request per call on a fresh connection (or a given one, for keep-alive), JSON
in and out. Also a raw-socket request for what http.client will not send
(no Content-Length, a body that stops halfway).
"""
import asyncio
import http.client
import json
import os
import socket
import time

KEY = "test-key-0123456789-abcdefghijklmnopqrstuvwxyz"


async def call(fn, *args, **kw):
    """A blocking API call from a coroutine, without stalling the WebSocket clients."""
    return await asyncio.to_thread(fn, *args, **kw)


async def connected(g, codec="json"):
    """A WebSocket client of gateway g, connected."""
    from rtclient import Client
    c = Client(g.url(), codec)
    await c.open()
    await c.connect()
    return c


def write_key(tmp_path, key=KEY, name="api.key"):
    p = os.path.join(str(tmp_path), name)
    with open(p, "w") as f:
        f.write(key + "\n")
    return p


class Api:
    def __init__(self, port, key=KEY, timeout=10.0):
        self.port, self.key, self.timeout = port, key, timeout

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def request(self, method, path, body=None, key=True, headers=None, conn=None):
        """Returns (status, headers dict lower-cased, parsed JSON or the text)."""
        h = dict(headers or {})
        if key is True:
            key = self.key
        if key:
            h["Authorization"] = "Bearer " + key
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        own = conn is None
        c = conn or self.conn()
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            raw = r.read().decode("utf-8", "replace")
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            if own:
                c.close()
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw
        return r.status, hdrs, data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body=body, **kw)

    def publish(self, channel=None, data=None, msg_id=None, expect=200, **fields):
        body = dict(fields)
        if channel is not None:
            body["channel"] = channel
        if data is not None:
            body["data"] = data
        if msg_id is not None:
            body["msg_id"] = msg_id
        status, _, r = self.post("/api/v1/publish", body)
        assert status == expect, (status, r)
        return r

    def raw(self, data, timeout=5.0):
        """Sends bytes on a new socket; returns (status, headers, body text)
        of the first response, or None if the server closed without one."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            return read_response(s, timeout)
        finally:
            s.close()


def post_bytes(path, body, key=KEY):
    """A whole POST request as bytes (for raw sockets: pipelining, stalls)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), key.encode(), len(body)) + body)


def read_responses(s, n, timeout=10.0):
    """n responses read from one socket, in order (None where it closed)."""
    out, buf = [], b""
    for _ in range(n):
        r, buf = _parse_one(s, buf, timeout)
        out.append(r)
        if r is None:
            break
    return out


def _parse_one(s, buf, timeout):
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("no response")
        chunk = s.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    body = rest[:n].decode("utf-8", "replace")
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return (int(lines[0].split()[1]), hdrs, body), rest[n:]


def read_response(s, timeout=5.0):
    """The first response on socket s: (status, headers, body), or None if it closed."""
    return _parse_one(s, b"", timeout)[0]
