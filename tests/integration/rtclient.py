"""
A small asyncio client of rtgate's protocol v1 (PROTOCOL.md), for the
integration tests, in both subprotocols:

- rtgate.v1.json: text frames; a frame may hold several JSON objects (the
  server writes one compact object per line).
- rtgate.v1.msgpack: binary frames; a frame may hold several maps back to back.

Every wait has a timeout: no test can hang on a silent server. Whatever the
client sees that breaks the protocol's framing rules (a binary frame on JSON,
a text frame on msgpack, undecodable bytes, a non-object message) is recorded
in `violations`, and `close()` fails on it.
"""
import asyncio
import base64
import json
import socket
import time

import msgpack
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

SUBPROTOCOLS = {"json": "rtgate.v1.json", "msgpack": "rtgate.v1.msgpack"}
EVENT_TYPES = ("msg", "gap", "disconnect", "pong", "error", "geo", "presence")
DEFAULT_TIMEOUT = 5.0


class ProtocolViolation(AssertionError):
    pass


def decode_json_frame(text):
    """Every JSON object of a text frame, plus a list of violations."""
    out, problems = [], []
    dec = json.JSONDecoder()
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        try:
            obj, end = dec.raw_decode(text, i)
        except ValueError as e:
            problems.append("undecodable JSON in frame %r: %s" % (text[:200], e))
            break
        if not isinstance(obj, dict):
            problems.append("a JSON message that is not an object: %r" % (obj,))
        else:
            out.append(obj)
        i = end
    return out, problems


def decode_msgpack_frame(data):
    out, problems = [], []
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    up.feed(data)
    try:
        for obj in up:
            if not isinstance(obj, dict):
                problems.append("a msgpack message that is not a map: %r" % (obj,))
            else:
                out.append(obj)
    except Exception as e:  # msgpack raises several types
        problems.append("undecodable msgpack in frame %r: %s" % (data[:200], e))
    else:
        if up.tell() != len(data):
            problems.append("truncated msgpack at the end of a frame (%d of %d bytes used)"
                            % (up.tell(), len(data)))
    return out, problems


def encode(codec, obj):
    if codec == "msgpack":
        return msgpack.packb(obj, use_bin_type=True)
    return json.dumps(obj, separators=(",", ":"))


class Requests:
    """Requests, replies and waiting on events, the same over every transport
    (Client here, httpclient.HttpClient for SSE and long-polling). The class
    using it has `send(obj)`, `_pending` (id -> future), `_next_id` and the
    `events` queue, and keeps `all` (every message), `violations` and
    `auto_ack`."""

    def _dispatch(self, m):
        """One message from the server: a reply settles its request, the rest are events."""
        self.all.append(m)
        t = m.get("type")
        if t in ("reply", "connected") and "id" in m:
            fut = self._pending.pop(m["id"], None)
            if fut is None:
                self.violations.append("reply to an unknown id: %r" % (m,))
            elif not fut.done():
                fut.set_result(m)
            return
        if t == "msg" and self.auto_ack and "seq" in m:
            asyncio.ensure_future(self._send_quiet({"type": "ack", "channel": m["channel"],
                                                    "seq": m["seq"]}))
        if t not in EVENT_TYPES:
            self.violations.append("unexpected message: %r" % (m,))
        self.events.put_nowait(m)

    def new_id(self):
        i = self._next_id
        self._next_id += 1
        return i

    def expect_reply(self, rid):
        """A future for the reply to id `rid` of a request sent by hand (send_raw)."""
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        return fut

    def request_nowait(self, type_, **fields):
        """Sends a request with a fresh id; returns (id, future of the reply)."""
        rid = fields.pop("id", None)
        if rid is None:
            rid = self.new_id()
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        obj = {"type": type_, "id": rid}
        obj.update(fields)
        return rid, fut, self.send(obj)

    async def request(self, type_, timeout=DEFAULT_TIMEOUT, **fields):
        _rid, fut, sending = self.request_nowait(type_, **fields)
        await sending
        return await asyncio.wait_for(fut, timeout)

    async def requests(self, reqs, timeout=DEFAULT_TIMEOUT):
        """Pipelines [(type, fields), ...] without waiting; returns the replies in order."""
        futs = []
        for t, f in reqs:
            _rid, fut, sending = self.request_nowait(t, **dict(f))
            await sending
            futs.append(fut)
        return [await asyncio.wait_for(f, timeout) for f in futs]

    async def sub(self, channel, **fields):
        return await self.request("sub", channel=channel, **fields)

    async def unsub(self, channel):
        return await self.request("unsub", channel=channel)

    async def pub(self, channel, data, **fields):
        return await self.request("pub", channel=channel, data=data, **fields)

    async def ack(self, channel, seq):
        await self.send({"type": "ack", "channel": channel, "seq": seq})

    async def ping(self):
        await self.send({"type": "ping"})

    # -- waiting --------------------------------------------------------------
    async def next_event(self, types=None, timeout=DEFAULT_TIMEOUT):
        """The next queued event (of one of `types` if given; others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError("no %s event within %.1f s" % (types or "", timeout))
            m = await asyncio.wait_for(self.events.get(), left)
            if types is None or m.get("type") in types:
                return m

    async def collect(self, n, types=("msg",), timeout=DEFAULT_TIMEOUT):
        """Exactly n events of `types` (others are dropped), failing after timeout."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError("got %d of %d %s events within %.1f s: %r"
                                           % (len(out), n, types, timeout, out[-3:]))
            out.append(await self.next_event(types, left))
        return out

    async def quiet(self, seconds, types=("msg", "gap")):
        """Events of `types` that arrive within `seconds` (expected: none)."""
        out = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                m = await asyncio.wait_for(self.events.get(), left)
            except asyncio.TimeoutError:
                return out
            if m.get("type") in types:
                out.append(m)

    def drain_events(self):
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out


class Client(Requests):
    """One WebSocket connection. Use `async with Client(url, codec) as c:`.

    codec: "json", "msgpack", or None (offer no subprotocol: the server must
    choose JSON). subprotocols overrides what is offered. ssl: an SSLContext
    for wss:// URLs.
    """

    def __init__(self, url, codec="json", subprotocols=None, auto_ack=False, max_queue=2**10,
                 name=None, ssl=None):
        self.url = url
        self.ssl = ssl
        self.codec = codec
        self.wire = codec or "json"
        if subprotocols is None:
            subprotocols = [SUBPROTOCOLS[codec]] if codec else []
        self.offered = subprotocols
        self.auto_ack = auto_ack
        self.max_queue = max_queue
        self.name = name
        self.ws = None
        self._next_id = 1
        self._pending = {}
        self.events = asyncio.Queue()
        self.all = []           # every message received, in order
        self.violations = []
        self.frames = 0
        self.closed = asyncio.Event()
        self.close_code = None
        self.close_reason = None
        self._reader = None
        self.connected = None

    # -- open / close -------------------------------------------------------
    async def open(self, timeout=DEFAULT_TIMEOUT):
        kw = dict(max_size=None, max_queue=self.max_queue, ping_interval=None,
                  open_timeout=timeout, close_timeout=2)
        if self.offered:
            kw["subprotocols"] = self.offered
        if self.ssl is not None:
            kw["ssl"] = self.ssl
        self.ws = await asyncio.wait_for(websockets.connect(self.url, **kw), timeout)
        if self.codec is None and self.ws.subprotocol is not None:
            self.violations.append("no subprotocol offered but the server chose %r"
                                   % self.ws.subprotocol)
        if self.ws.subprotocol is not None:
            self.wire = "msgpack" if self.ws.subprotocol == SUBPROTOCOLS["msgpack"] else "json"
        self._reader = asyncio.ensure_future(self._read_loop())
        return self

    async def __aenter__(self):
        return await self.open()

    async def __aexit__(self, et, ev, tb):
        await self.close(check=et is None)

    async def close(self, check=True):
        if self.ws is not None and not self.closed.is_set():
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                pass
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except BaseException:
                pass
        if self.ws is not None:
            self.ws.transport.abort() if self.ws.transport else None
        if check and self.violations:
            raise ProtocolViolation("%s: %s" % (self.name or "client", "; ".join(self.violations)))

    def pause(self):
        """Stops reading: with a small max_queue the socket backs up into the server."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    # -- receiving ----------------------------------------------------------
    async def _read_loop(self):
        try:
            while True:
                frame = await self.ws.recv()
                self.frames += 1
                self._on_frame(frame)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug in this client must not hang the test
            self.violations.append("reader crashed: %r" % (e,))
        finally:
            if self.ws.close_code is not None or self.ws.closed:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason
                self.closed.set()
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("closed with %s" % self.close_code))
                        fut.exception()  # retrieved: no warning if nobody waits for it

    def _on_frame(self, frame):
        if self.wire == "json":
            if not isinstance(frame, str):
                self.violations.append("binary frame on the JSON subprotocol")
                frame = frame.decode("utf-8", "replace")
            msgs, problems = decode_json_frame(frame)
            if not problems:
                # The server writes compact JSON, one object per line (PROTOCOL.md 1).
                lines = [l for l in frame.split("\n") if l.strip()]
                if len(lines) != len(msgs):
                    problems.append("JSON frame not one object per line: %r" % frame[:200])
        else:
            if not isinstance(frame, bytes):
                self.violations.append("text frame on the msgpack subprotocol")
                frame = frame.encode()
            msgs, problems = decode_msgpack_frame(frame)
        self.violations.extend(problems)
        for m in msgs:
            self._dispatch(m)

    async def _send_quiet(self, obj):
        try:
            await self.send(obj)
        except ConnectionClosed:
            pass

    # -- sending -------------------------------------------------------------
    async def send(self, obj):
        await self.ws.send(encode(self.wire, obj))

    async def send_raw(self, data):
        """bytes go out as a binary frame, str as a text frame."""
        await self.ws.send(data)

    async def send_text_bytes(self, data):
        """A text frame with arbitrary (possibly invalid UTF-8) bytes."""
        await self.ws.write_frame(True, 0x1, data)

    async def connect(self, **fields):
        r = await self.request("connect", **fields)
        assert r.get("type") == "connected", "connect answered %r" % (r,)
        self.connected = r
        return r

    async def expect_disconnect(self, code, timeout=DEFAULT_TIMEOUT):
        """The `disconnect` message a server sends before closing on purpose
        (PROTOCOL.md 5), then the close with the same code. Returns the message."""
        deadline = time.monotonic() + timeout
        d = None
        while d is None:
            if self.closed.is_set() and self.events.empty():
                raise AssertionError("no disconnect message before the close (code %s)"
                                     % self.close_code)
            if time.monotonic() > deadline:
                raise AssertionError("no disconnect message within %.1f s; the connection "
                                     "is still open" % timeout)
            try:
                m = await asyncio.wait_for(self.events.get(), 0.05)
            except asyncio.TimeoutError:
                continue
            if m.get("type") == "disconnect":
                d = m
        assert d["code"] == code, d
        got, _ = await self.wait_closed(timeout)
        assert got == code, "disconnect said %d, the WebSocket close code was %s" % (code, got)
        return d

    async def wait_closed(self, timeout=DEFAULT_TIMEOUT):
        """Waits for the server to close; returns (code, reason)."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code, self.close_reason


async def open_client(url, codec="json", connect=True, **kw):
    c = Client(url, codec, **kw)
    await c.open()
    if connect:
        await c.connect()
    return c


def handshake_status(url, subprotocols):
    """Tries a WebSocket handshake; returns (status, headers) of a refusal or (101, headers)."""
    async def go():
        kw = dict(max_size=None, ping_interval=None, open_timeout=5, close_timeout=1)
        if subprotocols:
            kw["subprotocols"] = subprotocols
        try:
            ws = await websockets.connect(url, **kw)
        except InvalidStatusCode as e:
            return e.status_code, e.headers
        hdrs = ws.response_headers
        await ws.close()
        return 101, hdrs
    return go


def raw_handshake(port, path="/ws", protocols=None, timeout=5.0, rcvbuf=None):
    """A WebSocket handshake on a plain socket (the client then never reads or
    writes unless the caller does). Returns (status, headers dict, socket)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(b"0123456789abcdef").decode()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
           % (path, port, key))
    if protocols:
        req += "Sec-WebSocket-Protocol: %s\r\n" % ", ".join(protocols)
    s.sendall((req + "\r\n").encode())
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("no handshake response")
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, s


def raw_frame(payload, text=True):
    """One masked (client) WebSocket frame."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    head = bytes([0x80 | (0x1 if text else 0x2)])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = b"\x11\x22\x33\x44"
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def b64(data):
    return base64.b64encode(data).decode()


def run(coro, timeout=60.0):
    """Runs a coroutine to completion from a sync test, never longer than timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
