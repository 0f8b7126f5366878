#!/usr/bin/python3
"""A tiny stand-in for rtgate, for checking rtgate-load itself (not a benchmark).

Speaks enough of PROTOCOL.md (connect, sub, pub, ack, ping) in both
subprotocols, and can misbehave on purpose so the load generator's checks
can be seen to work: drop, duplicate or reorder deliveries, answer 429,
batch several messages per frame, fragment frames, add durable `seq`s.

Needs /usr/bin/python3 with python3-websockets (10.x) and python3-msgpack.

    /usr/bin/python3 loadtest/fake_gateway.py --port 18080 [--drop-every 50] ...
"""
import argparse
import asyncio
import itertools
import json
import time

import websockets

try:
    import msgpack
except ImportError:  # msgpack is optional
    msgpack = None

SUBPROTOCOLS = ["rtgate.v1.json", "rtgate.v1.msgpack"]


class Hub:
    def __init__(self, args):
        self.args = args
        self.subs = {}  # channel -> set of Session
        self.seq = {}  # channel -> last seq
        self.deliveries = 0
        self.pubs = 0
        self.client_ids = itertools.count(1)


class Session:
    def __init__(self, hub, ws):
        self.hub = hub
        self.ws = ws
        self.msgpack = ws.subprotocol == "rtgate.v1.msgpack"
        self.connected = False
        self.channels = set()
        self.held = None  # a delivery held back to be sent after the next one (reorder)
        self.queue = asyncio.Queue()

    def encode(self, obj):
        if self.msgpack:
            return msgpack.packb(obj)
        return json.dumps(obj, separators=(",", ":"))

    def decode(self, raw):
        if self.msgpack:
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(raw)
            return list(unpacker)
        out, dec, i = [], json.JSONDecoder(), 0
        while i < len(raw):
            while i < len(raw) and raw[i] in " \r\n\t":
                i += 1
            if i >= len(raw):
                break
            obj, i = dec.raw_decode(raw, i)
            out.append(obj)
        return out

    def push(self, obj):
        self.queue.put_nowait(obj)

    async def writer(self):
        a = self.hub.args
        while True:
            batch = [await self.queue.get()]
            while a.batch > 1 and len(batch) < a.batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if self.msgpack:
                payload = b"".join(self.encode(o) for o in batch)
            else:
                payload = "\n".join(self.encode(o) for o in batch) + "\n"
            if a.fragment and len(payload) > 8:
                mid = len(payload) // 2
                await self.ws.send(iter([payload[:mid], payload[mid:]]))
            else:
                await self.ws.send(payload)

    def reply(self, req, **kw):
        self.push(dict(type="reply", id=req.get("id"), **kw))

    def handle(self, req):
        t = req.get("type")
        if t == "ping":
            self.push({"type": "pong"})
            return
        if not isinstance(req.get("id"), int) and t not in ("ack",):
            self.push({"type": "error", "error": {"code": 400, "reason": "bad_request"}})
            return
        if t == "connect":
            self.connected = True
            self.push({"type": "connected", "id": req["id"], "client": "c%d" % next(self.hub.client_ids),
                       "user": "anon", "node": "fake", "heartbeat_ms": 25000,
                       "limits": {"pub_rate": 1000000, "pub_burst": 1000000,
                                  "max_message_bytes": 65536, "max_subs": 256,
                                  "max_unacked": self.hub.args.max_unacked}})
            return
        if not self.connected:
            self.reply(req, ok=False, error={"code": 401, "reason": "unauthorized"})
            return
        if t == "sub":
            ch = req["channel"]
            if ch in self.channels:
                self.reply(req, ok=False, error={"code": 409, "reason": "conflict"})
                return
            self.channels.add(ch)
            self.hub.subs.setdefault(ch, set()).add(self)
            self.reply(req, ok=True, durable=self.hub.args.durable, seq=self.hub.seq.get(ch, 0))
        elif t == "ack":
            pass
        elif t == "pub":
            a = self.hub.args
            self.hub.pubs += 1
            if a.reject_every and self.hub.pubs % a.reject_every == 0:
                self.reply(req, ok=False,
                           error={"code": 429, "reason": "rate_limited", "retry_after_ms": 20})
                return
            ch = req["channel"]
            msg = {"type": "msg", "channel": ch, "data": req.get("data"), "ts": int(time.time() * 1000)}
            if a.durable:
                self.hub.seq[ch] = self.hub.seq.get(ch, 0) + 1
                msg["seq"] = self.hub.seq[ch]
                self.reply(req, ok=True, seq=msg["seq"], dup=False)
            else:
                self.reply(req, ok=True)
            for s in list(self.hub.subs.get(ch, ())):
                s.deliver(msg)
        else:
            self.reply(req, ok=False, error={"code": 400, "reason": "bad_request"})

    def deliver(self, msg):
        a = self.hub.args
        self.hub.deliveries += 1
        n = self.hub.deliveries
        if a.drop_every and n % a.drop_every == 0:
            return
        if a.swap_every and n % a.swap_every == 0 and self.held is None:
            self.held = msg
            return
        self.push(msg)
        if a.dup_every and n % a.dup_every == 0:
            self.push(msg)
        if self.held is not None:
            self.push(self.held)
            self.held = None


async def serve(ws, path, hub):
    s = Session(hub, ws)
    w = asyncio.ensure_future(s.writer())
    try:
        async for raw in ws:
            for req in s.decode(raw):
                s.handle(req)
    except websockets.ConnectionClosed:
        pass
    finally:
        w.cancel()
        for ch in s.channels:
            hub.subs.get(ch, set()).discard(s)


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--drop-every", type=int, default=0, help="drop every Nth delivery")
    p.add_argument("--dup-every", type=int, default=0, help="send every Nth delivery twice")
    p.add_argument("--swap-every", type=int, default=0, help="hold every Nth delivery back by one")
    p.add_argument("--reject-every", type=int, default=0, help="answer every Nth pub with 429")
    p.add_argument("--batch", type=int, default=1, help="messages per frame when queued")
    p.add_argument("--fragment", action="store_true", help="send every frame in two fragments")
    p.add_argument("--durable", action="store_true", help="add a per-channel seq")
    p.add_argument("--max-unacked", type=int, default=1024)
    p.add_argument("--ping-interval", type=float, default=1.0)
    a = p.parse_args()
    hub = Hub(a)
    async with websockets.serve(lambda ws, path: serve(ws, path, hub), a.host, a.port,
                                subprotocols=SUBPROTOCOLS, ping_interval=a.ping_interval,
                                max_size=1 << 20, compression=None, backlog=4096):
        print("fake gateway listening on %s:%d" % (a.host, a.port), flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
