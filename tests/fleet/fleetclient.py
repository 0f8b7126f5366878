"""
Self-checking clients for the fleet tests (tests/fleet/test_failover.py).

A Population is a few thousand WebSocket clients, each subscribed to one
durable channel through haproxy, and publishers that publish to every channel
at a steady rate with a msg_id, retrying until they get an `ok`. Every client
acknowledges what it gets and remembers it; `verify` then checks each client
got exactly the acknowledged messages of its channel published after it
subscribed, in order, none twice, none missing.

A client whose connection ends reconnects through haproxy and resumes with
`since` = the last seq it saw: after a `disconnect` (drain) it waits the
advised after_ms; after an HTTP 503 the Retry-After (plus jitter); after a
dead connection a jittered exponential backoff ("backoff" mode: full jitter,
first retry within 1 s) or at once ("storm" mode: every dropped client comes
back in the same instant, a reconnect storm).

Each client connects from its own loopback source address (8 clients an
address, source_address), so the per-address limits behind haproxy see
many clients, as they would.

Lean on purpose (one asyncio loop holds thousands of connections on a 2-core
machine): no per-message queue, no compression, one json.loads per line and
one cumulative ack per frame. Times are time.monotonic(); message ages use the
wall clock of the message's `ts` (the accepting gateway's, on this machine).
"""
import asyncio
import json
import math
import random
import time

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

SUBPROTOCOL = "rtgate.v1.json"
ERROR_CLOSES = {1002, 1003, 1007, 1008, 1009, 1010, 1011, 4001, 4003}


def source_address(idx):
    """The loopback address client idx connects from: 8 clients an address, as
    if from many machines (the gateways see them through X-Forwarded-For, and
    their per-address handshake limit applies to each)."""
    k = idx // 8
    return "127.0.%d.%d" % (1 + k // 250, 1 + k % 250)


class SubRefused(Exception):
    """The resume was answered 503 (say, NATS electing a leader): retry later."""


class Drop:
    """One connection of one client that ended, and its resume."""
    __slots__ = ("t_drop", "code", "told", "node", "t_back", "node_after")

    def __init__(self, t_drop, code, told, node):
        self.t_drop = t_drop
        self.code = code          # the WebSocket close code (1006: no close frame)
        self.told = told          # a `disconnect` message came first
        self.node = node          # the node it was on
        self.t_back = None        # when its resume (sub with since) was answered
        self.node_after = None


class FleetClient:
    __slots__ = ("pop", "idx", "channel", "epoch", "start_seq", "last_seq", "acked", "received",
                 "dups", "gaps", "problems", "node", "ws", "drops", "lat", "disconnect",
                 "attempt", "task", "ready", "source")

    def __init__(self, pop, idx, channel):
        self.pop = pop
        self.idx = idx
        self.channel = channel
        self.epoch = None
        self.start_seq = None     # the channel's seq when it first subscribed
        self.last_seq = 0
        self.acked = 0
        self.received = []        # (seq, i) in arrival order, duplicates left out
        self.dups = 0
        self.gaps = []
        self.problems = []
        self.node = None
        self.ws = None
        self.drops = []
        self.lat = []             # (t_recv monotonic, age ms)
        self.disconnect = None
        self.attempt = 0
        self.task = None
        self.ready = False
        self.source = source_address(idx)

    async def run(self, delay):
        await asyncio.sleep(delay)
        while not self.pop.stopping:
            wait = await self.session()
            if self.pop.stopping:
                return
            await asyncio.sleep(wait)

    def backoff(self):
        """Seconds before the next attempt after a failure."""
        self.attempt += 1
        if self.pop.mode == "storm" and self.attempt == 1:
            return 0.0
        return random.uniform(0, min(8.0, 1.0 * 2 ** (self.attempt - 1)))

    async def session(self):
        """One connection, from handshake to close. Returns the wait before the next."""
        pop = self.pop
        self.disconnect = None
        try:
            ws = await websockets.connect(
                pop.url, subprotocols=[SUBPROTOCOL], compression=None, ping_interval=None,
                open_timeout=15, close_timeout=3, max_size=2 ** 20, max_queue=64,
                read_limit=2 ** 16, write_limit=2 ** 16, local_addr=(self.source, 0))
        except InvalidStatusCode as e:
            pop.refusals[e.status_code] = pop.refusals.get(e.status_code, 0) + 1
            ra = e.headers.get("Retry-After")
            if e.status_code in (429, 503) and ra and ra.isdigit():
                self.attempt += 1
                return int(ra) + random.uniform(0, 1.0)
            return self.backoff()
        except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake,
                ConnectionClosed):
            pop.connect_failures += 1
            return self.backoff()
        self.ws = ws
        try:
            await self.serve(ws)
        except ConnectionClosed:
            pass
        except SubRefused:
            await ws.close()
        except asyncio.TimeoutError:
            self.problems.append("no reply to connect/sub within 15 s")
            ws.transport.abort()
        finally:
            self.ws = None
        if self.ready:
            self.ready = False
            code = ws.close_code if ws.close_code is not None else 1006
            self.drops.append(Drop(time.monotonic(), code, self.disconnect is not None, self.node))
        if pop.stopping:
            return 0
        if self.disconnect is not None:
            self.attempt = 0
            return self.disconnect.get("after_ms", 0) / 1000.0 + random.uniform(0, 0.1)
        return self.backoff()

    async def serve(self, ws):
        await ws.send('{"type":"connect","id":1}')
        sub = {"type": "sub", "id": 2, "channel": self.channel}
        if self.epoch is not None:
            sub["since"] = self.last_seq
            sub["epoch"] = self.epoch
        subscribed = False
        deadline = time.monotonic() + 15
        await ws.send(json.dumps(sub))
        while True:
            if not subscribed:
                frame = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            else:
                frame = await ws.recv()
            for line in frame.split("\n"):
                if not line:
                    continue
                m = json.loads(line)
                t = m.get("type")
                if t == "msg":
                    self.on_msg(m)
                elif t == "reply" and m.get("id") == 2:
                    subscribed = True
                    self.on_subscribed(m)
                elif t == "connected":
                    self.node = m.get("node")
                elif t == "disconnect":
                    self.disconnect = m
                elif t == "gap":
                    self.gaps.append((m.get("from"), m.get("to")))
                elif t == "reply" and not m.get("ok"):
                    self.problems.append("error reply %r" % m)
            if self.last_seq > self.acked and subscribed:
                self.acked = self.last_seq
                try:
                    await ws.send('{"type":"ack","channel":"%s","seq":%d}'
                                  % (self.channel, self.last_seq))
                except ConnectionClosed:
                    pass  # closing: what the server sent before its close is still to be read

    def on_subscribed(self, m):
        if not m.get("ok"):
            if (m.get("error") or {}).get("code") != 503:
                self.problems.append("sub refused: %r" % m)
            raise SubRefused()
        if self.epoch is None:
            self.epoch = m["epoch"]
            self.start_seq = m["seq"]
            self.last_seq = max(self.last_seq, m["seq"])
        elif m.get("recovered") is not True:
            self.problems.append("resume since %d not recovered: %r" % (self.last_seq, m))
        self.ready = True
        self.attempt = 0
        if self.drops and self.drops[-1].t_back is None:
            self.drops[-1].t_back = time.monotonic()
            self.drops[-1].node_after = self.node

    def on_msg(self, m):
        seq = m["seq"]
        if seq <= self.last_seq:
            self.dups += 1
            return
        self.last_seq = seq
        self.received.append((seq, m["data"]["i"]))
        self.lat.append((time.monotonic(), time.time() * 1000.0 - m["ts"]))


class Publisher:
    """Publishes to its channels, one message at a time per channel, with a
    msg_id; retries the same msg_id until it is acknowledged (so every stored
    message is in `acked`, with its seq)."""

    def __init__(self, pop, name):
        self.pop = pop
        self.name = name
        self.ws = None
        self.next_id = 1
        self.pending = {}
        self.connecting = None
        self.retries = 0
        self.reply_ms = []

    async def connection(self):
        while self.ws is None or self.ws.closed:
            if self.connecting is None:
                self.connecting = asyncio.ensure_future(self._connect())
            try:
                await asyncio.shield(self.connecting)
            except Exception:
                await asyncio.sleep(random.uniform(0.05, 0.5))
            finally:
                if self.connecting is not None and self.connecting.done():
                    self.connecting = None
        return self.ws

    async def _connect(self):
        ws = await websockets.connect(self.pop.url, subprotocols=[SUBPROTOCOL], compression=None,
                                      ping_interval=None, open_timeout=10, close_timeout=2)
        await ws.send('{"type":"connect","id":0}')
        while json.loads((await ws.recv()).split("\n")[0]).get("type") != "connected":
            pass
        self.ws = ws
        asyncio.ensure_future(self._read(ws))

    async def _read(self, ws):
        try:
            async for frame in ws:
                for line in frame.split("\n"):
                    if line:
                        m = json.loads(line)
                        f = self.pending.pop(m.get("id"), None)
                        if f is not None and not f.done():
                            f.set_result(m)
        except ConnectionClosed:
            pass
        for f in self.pending.values():
            if not f.done():
                f.set_exception(ConnectionError("publisher connection closed"))
        self.pending.clear()

    async def publish(self, channel, i):
        msg_id = "%s-%d" % (channel, i)
        while True:
            try:
                ws = await self.connection()
                rid = self.next_id
                self.next_id += 1
                f = asyncio.get_running_loop().create_future()
                self.pending[rid] = f
                t0 = time.monotonic()
                await ws.send(json.dumps({"type": "pub", "id": rid, "channel": channel,
                                          "msg_id": msg_id, "data": {"i": i}}))
                r = await asyncio.wait_for(f, 10)
            except (ConnectionError, ConnectionClosed, asyncio.TimeoutError, OSError):
                self.retries += 1
                await asyncio.sleep(random.uniform(0.05, 0.3))
                continue
            if r.get("ok"):
                self.reply_ms.append((time.monotonic(), (time.monotonic() - t0) * 1000.0))
                return r["seq"]
            self.retries += 1
            err = r.get("error") or {}
            await asyncio.sleep(err.get("retry_after_ms", 500) / 1000.0 + random.uniform(0, 0.2))


class Population:
    def __init__(self, url, n_clients, n_channels, rate_per_channel, n_publishers=4):
        self.url = url
        self.mode = "backoff"
        self.stopping = False
        self.publishing = False
        self.refusals = {}
        self.connect_failures = 0
        self.channels = ["fleet.ch%03d" % c for c in range(n_channels)]
        self.clients = [FleetClient(self, i, self.channels[i % n_channels])
                        for i in range(n_clients)]
        self.rate = rate_per_channel
        self.publishers = [Publisher(self, "pub%d" % p) for p in range(n_publishers)]
        self.acked = {ch: [] for ch in self.channels}   # channel -> [(seq, i)]
        self.pub_tasks = []

    # -- life --------------------------------------------------------------
    async def connect_all(self, per_second, timeout):
        for k, c in enumerate(self.clients):
            c.task = asyncio.ensure_future(c.run(k / per_second))
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout, clients=None):
        clients = clients or self.clients
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(c.ready for c in clients):
                return
            await asyncio.sleep(0.1)
        n = sum(1 for c in clients if not c.ready)
        raise AssertionError("%d of %d clients not subscribed after %.0f s (refusals %r, "
                             "connect failures %d)" % (n, len(clients), timeout, self.refusals,
                                                       self.connect_failures))

    def start_publishing(self):
        self.publishing = True
        for k, ch in enumerate(self.channels):
            pub = self.publishers[k % len(self.publishers)]
            self.pub_tasks.append(asyncio.ensure_future(
                self._publish_loop(pub, ch, k / len(self.channels) / self.rate)))

    async def _publish_loop(self, pub, ch, offset):
        await asyncio.sleep(offset)
        period = 1.0 / self.rate
        i = 0
        nxt = time.monotonic()
        while self.publishing:
            seq = await pub.publish(ch, i)
            self.acked[ch].append((seq, i))
            i += 1
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    async def stop_publishing(self):
        self.publishing = False
        await asyncio.gather(*self.pub_tasks)
        self.pub_tasks = []

    def snapshot(self):
        """The last acknowledged seq of every channel, now."""
        return {ch: max((s for s, _ in a), default=0) for ch, a in self.acked.items()}

    async def wait_caught_up(self, timeout, upto=None):
        """Every client has its channel's messages up to `upto` (default: the last
        acknowledged one, once publishing has stopped)."""
        upto = upto or self.snapshot()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = [c for c in self.clients if c.last_seq < upto[c.channel]]
            if not behind:
                return
            await asyncio.sleep(0.2)
        raise AssertionError("%d clients behind after %.0f s, e.g. %s at %d of %d (ready=%s)"
                             % (len(behind), timeout, behind[0].idx, behind[0].last_seq,
                                upto[behind[0].channel], behind[0].ready))

    def rebalance(self, node, fraction):
        """Closes (1000) that share of the clients on `node`: they reconnect
        like any client, and haproxy's leastconn sends them to the emptier node."""
        chosen = [c for c in self.on_node(node) if random.random() < fraction]
        for c in chosen:
            if c.ws is not None:
                asyncio.ensure_future(c.ws.close())
        return chosen

    async def close(self):
        self.stopping = True
        self.publishing = False
        for c in self.clients:
            if c.ws is not None:
                c.ws.transport.abort()
        for c in self.clients:
            if c.task:
                c.task.cancel()
        for p in self.publishers:
            if p.ws is not None:
                p.ws.transport.abort()
        await asyncio.gather(*[c.task for c in self.clients if c.task],
                             *self.pub_tasks, return_exceptions=True)

    # -- checks ------------------------------------------------------------
    def verify(self, upto=None):
        """Exact set, in order, no duplicate, for the messages up to `upto` (a
        snapshot; default everything acknowledged): returns a summary dict."""
        upto = upto or self.snapshot()
        lost = extra = dups = bad_data = checked = 0
        problems = []
        for c in self.clients:
            top = upto[c.channel]
            expected = [(s, i) for s, i in self.acked[c.channel] if (c.start_seq or 0) < s <= top]
            received = [(s, i) for s, i in c.received if s <= top]
            checked += len(received)
            seqs = [s for s, _ in received]
            if any(a >= b for a, b in zip(seqs, seqs[1:])):
                problems.append("client %d: out of order" % c.idx)
            got = dict(received)
            exp = dict(expected)
            lost += len(exp.keys() - got.keys())
            extra += len(got.keys() - exp.keys())
            bad_data += sum(1 for s in exp.keys() & got.keys() if got[s] != exp[s])
            dups += c.dups
            if c.gaps:
                problems.append("client %d: gaps %r" % (c.idx, c.gaps[:3]))
            problems.extend("client %d: %s" % (c.idx, p) for p in c.problems[:2])
        return {"clients": len(self.clients),
                "messages_acked": sum(sum(1 for s, _ in self.acked[ch] if s <= upto[ch])
                                      for ch in self.channels),
                "deliveries_checked": checked,
                "lost": lost, "extra": extra, "duplicates": dups, "bad_data": bad_data,
                "publish_retries": sum(p.retries for p in self.publishers),
                "problems": problems[:20], "n_problems": len(problems)}

    def on_node(self, node):
        return [c for c in self.clients if c.ready and c.node == node]


def quantile(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]


def drops_since(clients, t0):
    """The first drop at or after t0 of each client that had one."""
    out = []
    for c in clients:
        d = next((d for d in c.drops if d.t_drop >= t0), None)
        if d is not None:
            out.append(d)
    return out
