"""Hostile-input checks of the HTTP transports found in their security
review (docs/protocol.md, "Server-Sent Events and long-polling"): each test
names what it guards against."""
import json
import socket
import time

from test_transports import json_lines, raw_request


def first_poll(port):
    """Opens a long-poll session: (session token, batch number)."""
    st, h, b = raw_request(port, "GET", "/poll")
    assert st == 200, (st, b)
    tok = [m for m in json_lines(b) if m["type"] == "connected"][0]["session"]
    return tok, h["rtgate-batch"]


def post(port, tok, seq, body):
    hdr = {"Rtgate-Session": tok, "Content-Length": str(len(body))}
    return raw_request(port, "POST", "/send?seq=%d" % seq, hdr, body)


def end_session(port, tok, seq):
    """The client's own close (POST close=1): the gateway then stops at once."""
    hdr = {"Rtgate-Session": tok, "Content-Length": "0"}
    assert raw_request(port, "POST", "/send?seq=%d&close=1" % seq, hdr)[0] == 204


def test_poll_gets_the_disconnect_of_a_session_the_server_closed(gateway):
    """The server closes a long-poll session while no poll is held (here for
    abuse): the next poll gets the last batch with the `disconnect` (its code
    and when to come back), as the doc promises, not a bare 404."""
    g = gateway("--abuse-limit", "3")
    tok, batch = first_poll(g.port)
    bad = b"\n".join([b'{"type":"nope"}'] * 6)
    assert post(g.port, tok, 1, bad)[0] == 204
    st, h, b = raw_request(g.port, "GET", "/poll?ack=%s" % batch, {"Rtgate-Session": tok})
    assert st == 200, (st, b)
    msgs = json_lines(b)
    d = [m for m in msgs if m["type"] == "disconnect"]
    assert d and d[0]["code"] == 1008, msgs
    # Its last words went out: the session is over.
    st, _, _ = raw_request(g.port, "GET", "/poll?ack=%s" % h["rtgate-batch"],
                           {"Rtgate-Session": tok})
    assert st == 404


def test_stalled_bodies_do_not_lock_everyone_out_of_post(gateway):
    """POST bodies being read share a 16 MiB budget. A client that declares
    big bodies and sends none of them (a slowloris, here with the token of a
    session that already ended) must not take that budget from the others:
    a body counts for what has arrived, and a dead session's token is
    answered 404 before its body is read."""
    g = gateway("--max-message-bytes", "8388608", "--handshake-timeout-ms", "20000")
    dead, _ = first_poll(g.port)
    assert post(g.port, dead, 1, b"")[0] == 204
    end_session(g.port, dead, 2)
    live, _ = first_poll(g.port)
    stalled = []
    try:
        for tok in (dead, dead, live, live):
            s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            s.sendall(("POST /send?seq=5 HTTP/1.1\r\nHost: x\r\nRtgate-Session: %s\r\n"
                       "Content-Length: 8388608\r\n\r\nx" % tok).encode())
            stalled.append(s)
        time.sleep(0.3)
        st, _, b = post(g.port, live, 1, b'{"type":"ping"}')
        assert st == 204, (st, b)
        # The dead token got its 404 at once, without a byte of its body read.
        for s in stalled[:2]:
            assert s.recv(4096).split(b" ")[1] == b"404"
    finally:
        for s in stalled:
            s.close()
    end_session(g.port, live, 2)


def test_bodies_past_the_budget_are_read_and_refused_503(gateway):
    """A body whose memory would take the bodies being read past 16 MiB is
    read to its end, kept nowhere and answered 503; the budget comes back
    when the others end."""
    mib = 1024 * 1024
    g = gateway("--max-message-bytes", str(8 * mib), "--handshake-timeout-ms", "20000")
    tok, _ = first_poll(g.port)
    head = ("POST /send?seq=1 HTTP/1.1\r\nHost: x\r\nRtgate-Session: %s\r\n"
            "Content-Length: %%d\r\n\r\n" % tok)
    stalled = []
    try:
        for size in (8 * mib, 4 * mib):  # all but their last byte: 12 MiB held
            s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
            s.sendall((head % size).encode() + b" " * (size - 1))
            stalled.append(s)
        time.sleep(0.5)
        body = b" " * (8 * mib - 15) + b'{"type":"ping"}'
        st, h, b = raw_request(g.port, "POST", "/send?seq=1",
                               {"Rtgate-Session": tok, "Content-Length": str(len(body))}, body,
                               timeout=20)
        assert st == 503 and int(h["retry-after"]) >= 1, (st, b)
    finally:
        for s in stalled:
            s.close()
    deadline = time.monotonic() + 10
    while True:  # the stalled bodies' memory comes back once their connections close
        st, _, b = post(g.port, tok, 1, b'{"type":"ping"}')
        if st == 204 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert st == 204, (st, b)
    end_session(g.port, tok, 2)


def test_a_batch_asked_for_again_costs_a_token_of_the_message_bucket(gateway):
    """A poll that acks the batch before gets the last batch again (its answer
    was lost). That answer can be 64 KiB for a request of a few hundred bytes,
    so each one takes a token of the session's message bucket: a client asking
    in a loop gets 429 with Retry-After once the bucket is empty, and the
    ordinary poll that acks the batch still works."""
    g = gateway("--msg-rate", "1", "--msg-burst", "3")
    tok, batch = first_poll(g.port)
    answers = []
    for _ in range(8):
        st, h, b = raw_request(g.port, "GET", "/poll?ack=%d" % (int(batch) - 1),
                               {"Rtgate-Session": tok})
        answers.append((st, h))
    ok = [h for st, h in answers if st == 200]
    refused = [h for st, h in answers if st == 429]
    assert ok and all(h["rtgate-batch"] == batch for h in ok), answers
    assert len(refused) >= 4 and all("retry-after" in h for h in refused), answers
    time.sleep(1.1)
    st, h, _ = raw_request(g.port, "GET", "/poll?ack=%d" % (int(batch) - 1),
                           {"Rtgate-Session": tok})
    assert st == 200 and h["rtgate-batch"] == batch, "a token came back: the batch again"
    end_session(g.port, tok, 1)
