"""10,000 malformed WebSocket frames over 200 connections: each connection
sends 49 frames that are bad but not fatal (invalid UTF-8 text, invalid
JSON, unmasked frames), each answered by an error while the connection
stays, then one fatal frame, closed with the code RFC 6455 asks for:

  reserved opcode, RSV bits, continuation without a start, a fragmented
  control frame, an invalid close code: 1002 (lws); a close reason that is
  not UTF-8: 1007 (rtgate, docs/protocol.md).

Debian's lws 4.1.6 falls short of RFC 6455 on three inputs, checked here as
what it does and marked xfail (strict) for what the RFC asks, so an lws that
fixes them turns the marks into failures to remove:

  a control frame over 125 bytes and a 64-bit length with its top bit set are
  cut without a close frame (the client sees 1006, not 1002); an unmasked
  client frame is not refused (1002) but unmasked with a stale key, so it
  reaches the decoder as garbage and gets error 400 (lws's main branch
  refuses it; no release up to 4.5.8 does).
"""
import json
import struct
import time

import pytest

from edgekit import (SMALL_ASAN, STREAM_FLAGS, attack_checked, close_code_of, frame, handshake,
                     server_frames)

CONNECTIONS, PER_CONNECTION = 200, 50

PING_JSON = b'{"type":"ping"}'

NON_FATAL = [
    ("bad utf-8 text", lambda: frame(1, b'{"type":"ping","x":"\xff\xfe"}')),
    ("not json", lambda: frame(1, b"{{{{")),
    ("unmasked text", lambda: frame(1, b"garbage!", masked=False)),
]

FATAL = [  # (name, frame bytes, close code, or None for "cut without a close frame")
    ("reserved opcode 3", lambda: frame(3, b"x"), 1002),
    ("reserved opcode 0xb", lambda: frame(0xB, b"x"), 1002),
    ("rsv1 without extension", lambda: frame(1, PING_JSON, rsv=4), 1002),
    ("rsv3", lambda: frame(1, PING_JSON, rsv=1), 1002),
    ("continuation without start", lambda: frame(0, b"x"), 1002),
    ("fragmented ping", lambda: frame(9, b"x", fin=False), 1002),
    ("invalid close code 1005", lambda: frame(8, struct.pack(">H", 1005)), 1002),
    ("close reason not utf-8", lambda: frame(8, struct.pack(">H", 1000) + b"\xc3\x28"), 1007),
    ("ping of 126 bytes", lambda: frame(9, b"p" * 126), None),
    ("64-bit length with the top bit set",
     lambda: bytes([0x82, 0xFF]) + b"\x80" + b"\x00" * 7 + b"mask", None),
]


def read_until_closed(s, timeout):
    """Everything the server sends until its close frame (answered, as a
    client does) or until it cuts the connection; raises if neither comes."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        if close_code_of(data) is not None:
            s.sendall(frame(8, struct.pack(">H", 1000)))
            return data
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, OSError):
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server did not close within %.0f s" % timeout)


def error_replies(data):
    """The `error` messages in the server's text frames."""
    return sum(1 for op, payload in server_frames(data) if op == 1
               for line in payload.splitlines() if json.loads(line).get("type") == "error")


def read_errors(s, n, timeout):
    """Reads until n error replies came (whole frames); returns the bytes."""
    deadline = time.monotonic() + timeout
    data = b""
    while error_replies(data) < n:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = s.recv(65536)
        assert chunk, "closed after %d error replies of %d" % (error_replies(data), n)
        data += chunk
        assert time.monotonic() < deadline, "%d error replies of %d" % (error_replies(data), n)
    return data


def one_connection(port, index):
    name, make, want = FATAL[index % len(FATAL)]
    status, _, _, s = handshake(port, headers={"Sec-WebSocket-Protocol": "rtgate.v1.json"})
    assert status == 101
    burst = b"".join(NON_FATAL[k % len(NON_FATAL)][1]() for k in range(PER_CONNECTION - 1))
    s.sendall(burst)
    # Each bad frame gets its error and the connection stays (the unmasked
    # ones too: garbage to the decoder).
    read_errors(s, PER_CONNECTION - 1, 10)
    s.sendall(make())
    data = read_until_closed(s, 10)
    s.close()
    got = close_code_of(data)
    assert got == want, "%s: close code %s, expected %s" % (name, got, want)


def test_ten_thousand_malformed_frames(gateway):
    g = gateway("--ip-conn-rate", "0", *STREAM_FLAGS, env=SMALL_ASAN)

    def attack():
        for i in range(CONNECTIONS):
            one_connection(g.port, i)

    attack_checked(g, attack, "%d malformed frames" % (CONNECTIONS * PER_CONNECTION))


@pytest.mark.xfail(strict=True, reason="lws 4.1.6 cuts these without a close frame")
@pytest.mark.parametrize("name", ["ping of 126 bytes", "64-bit length with the top bit set"])
def test_rfc_close_code_for_frames_lws_cuts(gateway, name):
    g = gateway()
    make = next(m for n, m, _ in FATAL if n == name)
    _, _, _, s = handshake(g.port)
    s.sendall(make())
    assert close_code_of(read_until_closed(s, 10)) == 1002


@pytest.mark.xfail(strict=True, reason="lws 4.1.6 does not refuse unmasked client frames")
def test_rfc_close_code_for_an_unmasked_frame(gateway):
    g = gateway()
    _, _, _, s = handshake(g.port)
    s.sendall(frame(1, PING_JSON, masked=False))
    assert close_code_of(read_until_closed(s, 5)) == 1002
