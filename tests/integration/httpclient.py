"""
An asyncio client of rtgate's HTTP transports (docs/protocol.md, "Server-Sent
Events and long-polling") with the request/reply interface of rtclient.Client,
so that a test written for WebSocket runs over SSE or long-polling unchanged:

- "sse": GET /sse is the session (its `connect` is the request's); events
  arrive on the stream, each one JSON message (`id:` lines are kept in
  `last_event_id`); requests go out by POST /send, numbered, one at a time.
- "longpoll": GET /poll opens the session (batch 1 holds `connected`), then
  polls carry `ack` of the last batch; requests by POST /send.

Plain sockets and HTTP/1.1 written here (no dependency beyond Python's own).
Every wait has a timeout. What breaks the framing rules (an event that is not
one JSON object, a poll body that is not one object per line, a missing
Rtgate-Batch) is recorded in `violations`, and close() fails on it, as in
rtclient.
"""
import asyncio
import json
import time
import urllib.parse

from rtclient import DEFAULT_TIMEOUT, EVENT_TYPES, ProtocolViolation, Requests, decode_json_frame

TRANSPORTS = ("sse", "longpoll")


def _host_port(url):
    u = urllib.parse.urlparse(url)
    return u.hostname, u.port


async def read_head(reader, timeout):
    """(status, {lower-case header: value}) of one HTTP response."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return status, headers


class HttpConn:
    """One keep-alive HTTP/1.1 connection; opened again when the server closed it."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method, path, headers=None, body=b"", timeout=DEFAULT_TIMEOUT):
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), timeout)
            head = "%s %s HTTP/1.1\r\nHost: %s:%d\r\n" % (method, path, self.host, self.port)
            for k, v in (headers or {}).items():
                head += "%s: %s\r\n" % (k, v)
            if method == "POST":
                head += "Content-Length: %d\r\n" % len(body)
            try:
                self.writer.write(head.encode() + b"\r\n" + body)
                await self.writer.drain()
                status, hdrs = await read_head(self.reader, timeout)
                n = int(hdrs.get("content-length", "0"))
                data = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
                continue
            if hdrs.get("connection", "").lower() == "close":
                self.close()
            return status, hdrs, data

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpClient(Requests):
    """One session over SSE or long-polling. Use `async with HttpClient(url, "sse") as c:`."""

    def __init__(self, url, transport="sse", auto_ack=False, name=None, channels=(),
                 last_event_id=None, post_to=None, poll_to=None, **_ignored):
        """post_to, poll_to: another node's URL for the POSTs, the polls after the first
        (no sticky sessions: the node there relays them to the session's node)."""
        assert transport in TRANSPORTS, transport
        self.host, self.port = _host_port(url)
        self.post_addr = _host_port(post_to or url)
        self.poll_addr = _host_port(poll_to or url)
        self.transport = transport
        self.codec = self.wire = "json"
        self.auto_ack = auto_ack
        self.name = name
        self.channels = list(channels)      # SSE: subscribed by the stream's URL
        self.last_event_id = last_event_id  # SSE: sent as Last-Event-ID
        self.session = None
        self._seq = 0
        self._post_lock = asyncio.Lock()
        self._posts = HttpConn(*self.post_addr)
        self._next_id = 1
        self._pending = {}
        self.events = asyncio.Queue()
        self.all = []
        self.violations = []
        self.closed = asyncio.Event()
        self.close_code = None
        self.close_reason = None
        self.connected = None
        self.refusal = None  # (status, messages) when the session was refused
        self.url_sub_replies = []  # SSE: the replies to the URL's subs (connect waits for them)
        self.batches = []    # long-poll: the batch numbers received, in order
        self._stream = None  # SSE: (reader, writer)
        self._task = None

    # -- open / close -------------------------------------------------------
    async def open(self, timeout=DEFAULT_TIMEOUT):
        return self  # the session starts with connect(): its request is the stream or first poll

    async def __aenter__(self):
        return await self.open()

    async def __aexit__(self, et, ev, tb):
        await self.close(check=et is None)

    async def close(self, check=True):
        if self.session and not self.closed.is_set():
            try:  # ends the session, as a WebSocket close 1000 would
                await self._post(b"", close=True)
            except Exception:
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
        if self._stream is not None:
            self._stream[1].close()
        self._posts.close()
        self._set_closed(None, None)
        if check and self.violations:
            raise ProtocolViolation("%s: %s" % (self.name or "client", "; ".join(self.violations)))

    def _set_closed(self, code, reason):
        if self.closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("session ended (%s)" % code))
                fut.exception()

    # -- the session's request: stream or first poll --------------------------
    def _query(self, fields):
        q = [("id", str(fields.get("id", 1)))]
        if fields.get("token"):
            q.append(("token", fields["token"]))
        if self.transport == "sse":
            q += [("channel", c) for c in self.channels]
        return urllib.parse.urlencode(q)

    async def connect(self, timeout=DEFAULT_TIMEOUT, expect_ok=True, **fields):
        rid = fields.setdefault("id", self.new_id())
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        url_subs = []
        if self.transport == "sse":  # the URL's subs are answered as requests id+1, id+2, ...
            for k in range(len(self.channels)):
                url_subs.append(asyncio.get_running_loop().create_future())
                self._pending[rid + 1 + k] = url_subs[-1]
            self._next_id = max(self._next_id, rid + 1 + len(self.channels))
        if self.transport == "sse":
            await self._open_stream(fields, timeout)
        else:
            await self._first_poll(fields, timeout)
        if not expect_ok:
            return await asyncio.wait_for(fut, timeout)
        r = await asyncio.wait_for(fut, timeout)
        assert r.get("type") == "connected", "connect answered %r" % (r,)
        assert r.get("transport") == self.transport and r.get("session"), r
        self.connected = r
        self.session = r["session"]
        # The URL's subs, answered right after: once they are, the channels are live (on
        # NATS a first subscriber's sub is answered when NATS has it), so what is
        # published next is delivered.
        self.url_sub_replies = [await asyncio.wait_for(f, timeout) for f in url_subs]
        return r

    async def _open_stream(self, fields, timeout):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                timeout)
        head = "GET /sse?%s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n" % (
            self._query(fields), self.host, self.port)
        if self.last_event_id:
            head += "Last-Event-ID: %s\r\n" % self.last_event_id
        writer.write((head + "\r\n").encode())
        status, headers = await read_head(reader, timeout)
        self._stream = (reader, writer)
        if status != 200:
            await self._refused(status, headers, reader)
            return
        if headers.get("content-type") != "text/event-stream":
            self.violations.append("stream content-type %r" % headers.get("content-type"))
        self._task = asyncio.ensure_future(self._read_stream(reader))

    async def _refused(self, status, headers, reader):
        n = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(n), DEFAULT_TIMEOUT) if n else b""
        msgs, problems = decode_json_frame(body.decode())
        self.violations.extend(problems)
        self.refusal = (status, msgs)
        for m in msgs:
            self._dispatch(m)
        d = [m for m in msgs if m.get("type") == "disconnect"]
        self._set_closed(d[0]["code"] if d else status, d[0]["reason"] if d else None)

    async def _read_stream(self, reader):
        event_data, try_id = [], None
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                line = line.decode().rstrip("\r\n")
                if line == "":
                    if event_data:
                        if try_id is not None:
                            self.last_event_id = try_id
                        self._on_event("\n".join(event_data))
                    event_data, try_id = [], None
                elif line.startswith(":"):
                    continue  # heartbeat
                else:
                    k, _, v = line.partition(":")
                    v = v[1:] if v.startswith(" ") else v
                    if k == "data":
                        event_data.append(v)
                    elif k == "id":
                        try_id = v
                    elif k != "retry":
                        self.violations.append("unknown SSE field %r" % k)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.violations.append("stream reader crashed: %r" % (e,))
        finally:
            self._set_closed(self._disconnect_code(), None)

    def _disconnect_code(self):
        for m in reversed(self.all):
            if m.get("type") == "disconnect":
                return m["code"]
        return 1006

    def _on_event(self, data):
        try:
            m = json.loads(data)
        except ValueError:
            self.violations.append("an SSE event that is not JSON: %r" % data[:200])
            return
        if not isinstance(m, dict):
            self.violations.append("an SSE event that is not one object: %r" % data[:200])
            return
        self._dispatch(m)

    async def _first_poll(self, fields, timeout):
        poll = HttpConn(self.host, self.port)
        status, headers, body = await poll.request("GET", "/poll?" + self._query(fields),
                                                   timeout=timeout)
        if status != 200:
            self.refusal = (status, decode_json_frame(body.decode())[0])
            for m in self.refusal[1]:
                self._dispatch(m)
            d = [m for m in self.refusal[1] if m.get("type") == "disconnect"]
            self._set_closed(d[0]["code"] if d else status, None)
            return
        self._on_batch(headers, body)
        poll.close()
        self._task = asyncio.ensure_future(self._poll_loop(HttpConn(*self.poll_addr)))

    def _on_batch(self, headers, body):
        if "rtgate-batch" not in headers:
            self.violations.append("a poll answer without Rtgate-Batch")
            return
        n = int(headers["rtgate-batch"])
        if not body:
            return
        self.batches.append(n)
        msgs, problems = decode_json_frame(body.decode())
        self.violations.extend(problems)
        if len([l for l in body.decode().split("\n") if l.strip()]) != len(msgs):
            self.violations.append("poll body not one object per line: %r" % body[:200])
        for m in msgs:
            self._dispatch(m)

    async def _poll_loop(self, poll):
        try:
            while not self.closed.is_set():
                ack = self.batches[-1] if self.batches else 1
                status, headers, body = await poll.request(
                    "GET", "/poll?ack=%d" % ack, {"Rtgate-Session": self.session}, timeout=60)
                if status == 404:
                    break  # the session ended
                if status != 200:
                    self.violations.append("poll answered %d: %r" % (status, body[:200]))
                    break
                self._on_batch(headers, body)
                if self._disconnect_code() != 1006:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.violations.append("poller crashed: %r" % (e,))
        finally:
            poll.close()
            self._set_closed(self._disconnect_code(), None)

    # -- receiving ----------------------------------------------------------
    def _dispatch(self, m):
        if m.get("type") == "connected" and m.get("session"):
            self.session = m["session"]  # before anything polls or posts
        super()._dispatch(m)

    async def _send_quiet(self, obj):
        try:
            await self.send(obj)
        except (ConnectionError, AssertionError):
            pass

    # -- sending: POST /send, numbered, one at a time --------------------------------
    async def _post(self, body, close=False):
        async with self._post_lock:
            self._seq += 1
            path = "/send?seq=%d%s" % (self._seq, "&close=1" if close else "")
            status, _, data = await self._posts.request(
                "POST", path, {"Rtgate-Session": self.session, "Content-Type": "text/plain"}, body)
            self.last_post = (status, data)
            return status

    async def send(self, obj):
        status = await self._post(json.dumps(obj, separators=(",", ":")).encode())
        if status != 204:
            raise ConnectionError("POST answered %d: %r" % (status, self.last_post[1][:200]))

    async def send_raw(self, data):
        status = await self._post(data if isinstance(data, bytes) else data.encode())
        if status != 204:
            raise ConnectionError("POST answered %d" % status)

    async def request(self, type_, timeout=DEFAULT_TIMEOUT, **fields):
        if type_ == "connect":
            return await self.connect(timeout=timeout, **fields)
        return await super().request(type_, timeout=timeout, **fields)

    async def wait_closed(self, timeout=DEFAULT_TIMEOUT):
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code, self.close_reason

    async def expect_disconnect(self, code, timeout=DEFAULT_TIMEOUT):
        d = await self.next_event(("disconnect",), timeout)
        assert d["code"] == code, d
        await self.wait_closed(timeout)
        return d


def Client(url, codec="json", **kw):
    """rtclient.Client for "json" / "msgpack" (WebSocket), HttpClient for "sse" / "longpoll"."""
    if codec in TRANSPORTS:
        return HttpClient(url, codec, **kw)
    import rtclient
    return rtclient.Client(url, codec, **kw)
