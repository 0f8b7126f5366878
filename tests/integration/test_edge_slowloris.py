"""Slowloris: 1,000 sockets each sending a WebSocket handshake one byte a
second. A handshake has a deadline (--handshake-timeout-ms, counted by lws
from the request's first byte, not reset by each byte), so every one of them
is closed once it passes, and meanwhile other clients connect at once and a
subscriber's deliveries keep flowing. 2,000 descriptors in all (both ends),
well under the 20,000 per process."""
import selectors
import time

from edgekit import (SMALL_ASAN, STREAM_FLAGS, attack_checked, connect_from, read_response,
                     upgrade_request)

SOCKETS = 1000
TIMEOUT_MS = 2000
# lws checks timeouts once a second and counts whole seconds: a handshake
# lives at most TIMEOUT + 1 s after its first byte; 3x that for a loaded CI.
BOUND_S = 3 * (TIMEOUT_MS / 1000.0 + 1.0)


def legit_handshake_s(port):
    t0 = time.monotonic()
    s = connect_from(port, "127.0.0.9")
    s.sendall(upgrade_request(port))
    status = read_response(s)[0]
    s.close()
    assert status == 101, status
    return time.monotonic() - t0


def slowloris(port):
    """Returns (how long the longest lived, worst legit handshake time)."""
    request = upgrade_request(port, headers={"X-Padding": "p" * 200})
    sel = selectors.DefaultSelector()
    opened = {}
    for i in range(SOCKETS):
        s = connect_from(port, "127.0.0.%d" % (10 + i % 100))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        opened[s] = time.monotonic()
    lived, sent_upto, worst_legit = [], 0, 0.0
    started = time.monotonic()
    next_byte = started
    while opened and time.monotonic() - started < BOUND_S + 2:
        now = time.monotonic()
        if now >= next_byte and sent_upto < len(request):
            for s in list(opened):
                try:
                    s.send(request[sent_upto:sent_upto + 1])
                except OSError:
                    pass  # closed under us: the selector reports it
            sent_upto += 1
            next_byte += 1.0
            worst_legit = max(worst_legit, legit_handshake_s(port))
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                lived.append(time.monotonic() - opened.pop(s))
                sel.unregister(s)
                s.close()
    for s in opened:
        s.close()
    assert not opened, "%d of %d slow handshakes still open after %.0f s" % (
        len(opened), SOCKETS, BOUND_S + 2)
    assert sent_upto < len(request), "the requests were sent whole: no deadline was tested"
    return max(lived), worst_legit


def test_a_thousand_slow_handshakes_are_cut_and_others_are_not_starved(gateway):
    g = gateway("--handshake-timeout-ms", str(TIMEOUT_MS), "--ip-conn-rate", "0",
                *STREAM_FLAGS,
                env=SMALL_ASAN)
    results = []

    def attack():
        longest, legit = slowloris(g.port)
        assert longest <= BOUND_S, "a slow handshake lived %.1f s" % longest
        assert legit < 1.0, "a normal handshake took %.2f s during the attack" % legit
        results.append((longest, legit))

    attack_checked(g, attack, "%d slowloris handshakes" % SOCKETS)
    print("edge: slowloris longest-lived %.2f s, worst legit handshake %.3f s" % results[-1])
