"""Hostile-input checks of the HTTP transports found in their security
review (docs/protocol.md, "Server-Sent Events and long-polling"): each test
names what it guards against."""
import json

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
