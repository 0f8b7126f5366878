"""
A TCP proxy between rtgate and a real nats-server, for tests that play the
network: it forwards 127.0.0.1:port to the server, records each
connection's SUBs, and can

- delay every byte by `delay` seconds in each direction (a slow link:
  bytes keep their order and the link keeps its bandwidth);
- inject bytes into, or swallow what goes to, the loop reader's connection
  (the one whose CONNECT names "rtgate-live ...");
- black-hole everything (`blackhole_all`): both directions are read and
  dropped, the connections stay open, as behind a dead router;
- hold new connections in the backlog (`hold`).

Each direction of each connection has a reader thread (which timestamps
what it read) and a writer thread (which sends it once it is due), so a
delay never stalls the other direction.
"""
import collections
import re
import select
import socket
import threading
import time


class Pair:
    """One proxied connection: the client (rtgate) side and the server side."""

    def __init__(self, client, upstream):
        self.client, self.upstream = client, upstream
        self.live = False  # the loop reader's connection (CONNECT name rtgate-live ...)
        self.blackhole = False  # swallow what the server sends to this (live) connection
        self.subs = {}  # subject -> sid
        self.lock = threading.Lock()  # one writer to the client side at a time
        self.closed = False
        self._line = b""

    def close(self):
        self.closed = True
        for s in (self.client, self.upstream):
            try:
                s.close()
            except OSError:
                pass


class Proxy:
    def __init__(self, upstream_port, delay=0.0):
        self.upstream_port = upstream_port
        self.delay = delay
        self.blackhole_all = False
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.url = "nats://127.0.0.1:%d" % self.port
        self.pairs = []
        self.stop = False
        self.hold = False  # True: new connections wait in the backlog (no INFO for them)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                if self.hold:
                    time.sleep(0.01)
                    continue
                r, _, _ = select.select([self.lsock], [], [], 0.1)
                if not r:
                    continue
                c, _ = self.lsock.accept()
                u = socket.create_connection(("127.0.0.1", self.upstream_port))
            except (OSError, ValueError):  # closed at teardown, or the server is gone
                return
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            p = Pair(c, u)
            self.pairs.append(p)
            for src, to_server in ((c, True), (u, False)):
                q = collections.deque()
                cond = threading.Condition()
                threading.Thread(target=self._read, args=(p, src, to_server, q, cond),
                                 daemon=True).start()
                threading.Thread(target=self._write, args=(p, to_server, q, cond),
                                 daemon=True).start()

    def _read(self, p, src, to_server, q, cond):
        try:
            while not self.stop and not p.closed:
                r, _, _ = select.select([src], [], [], 0.1)
                if not r:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                if to_server:
                    self._client_bytes(p, data)
                with cond:
                    q.append((time.monotonic() + self.delay, data))
                    cond.notify()
        except OSError:
            pass
        p.close()
        with cond:
            cond.notify()

    def _write(self, p, to_server, q, cond):
        dst = p.upstream if to_server else p.client
        try:
            while not self.stop and not p.closed:
                with cond:
                    while not q and not p.closed and not self.stop:
                        cond.wait(0.1)
                    if not q:
                        continue
                    due, data = q[0]
                    now = time.monotonic()
                    if due > now:
                        cond.wait(due - now)
                        continue
                    q.popleft()
                if self.blackhole_all or (not to_server and p.live and p.blackhole):
                    continue
                if to_server:
                    dst.sendall(data)
                else:
                    with p.lock:
                        dst.sendall(data)
        except OSError:
            pass
        p.close()

    def _client_bytes(self, p, data):
        p._line += data
        *lines, p._line = p._line.split(b"\n")
        for line in lines:
            if line.startswith(b"CONNECT ") and b'"rtgate-live ' in line:
                p.live = True
            m = re.match(rb"SUB (\S+) (\d+)", line)
            if m:
                p.subs[m.group(1).decode()] = int(m.group(2))
            m = re.match(rb"UNSUB (\d+)", line)
            if m:
                sid = int(m.group(1))
                p.subs = {k: v for k, v in p.subs.items() if v != sid}

    def live(self):
        """The loop reader's connections so far (the last one is current)."""
        return [p for p in self.pairs if p.live]

    def current(self):
        live = [p for p in self.live() if not p.closed]
        return live[-1] if live else None

    def inject(self, data):
        p = self.current()
        assert p is not None, "no live reader connection"
        with p.lock:
            p.client.sendall(data)

    def close(self):
        self.stop = True
        self.lsock.close()
        for p in self.pairs:
            p.close()
