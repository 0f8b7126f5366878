#!/usr/bin/python3
"""Writes the seed corpora of tests/fuzz (corpus/<target>/): hand-written
inputs that reach every message type, both codecs' odd corners and every
NATS op, so each fuzz run starts from deep coverage. Re-run it after
changing it; inputs that fuzzing found are added next to these by hand."""
import base64
import hashlib
import hmac
import json
import os

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))


def w(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


MSGS = {
    "connect": {"type": "connect", "id": 1, "token": "eyJhbGciOiJIUzI1NiJ9.e30.x", "name": "fuzz"},
    "sub": {"type": "sub", "id": 2, "channel": "chat.room1"},
    "sub_since": {"type": "sub", "id": 3, "channel": "chat.room1", "since": 120, "epoch": "k3x9"},
    "unsub": {"type": "unsub", "id": 4, "channel": "chat.room1"},
    "pub_obj": {"type": "pub", "id": 5, "channel": "chat.room1", "msg_id": "01JD-x",
                "data": {"text": "hi", "n": [1, 2.5, -3, True, None, "\u00e9\u2603"]}},
    "pub_scalar": {"type": "pub", "id": 6, "channel": "a.b-c_d:e", "data": 1.0e-7},
    "pub_string": {"type": "pub", "id": 7, "channel": "x",
                   "data": "caf\u00e9 \U0001F600 \"q\" \\ /"},
    "pub_b64": {"type": "pub", "id": 8, "channel": "bin.chan", "data_b64": "AAECA/8="},
    "ack": {"type": "ack", "channel": "chat.room1", "seq": 124},
    "ping": {"type": "ping"},
    "geo_set": {"type": "geo.set", "id": 9, "space": "drivers", "lat": 52.52, "lon": 13.405,
                "meta": {"car": "B-123"}},
    "geo_set_b64": {"type": "geo.set", "id": 10, "space": "riders", "lat": -89.9, "lon": 179.99,
                    "meta_b64": "AQI="},
    "geo_clear": {"type": "geo.clear", "id": 11, "space": "drivers"},
    "geo_near": {"type": "geo.near", "id": 12, "space": "drivers", "lat": 52.5201,
                 "lon": 13.4049, "radius_m": 500, "limit": 20},
    "geo_watch": {"type": "geo.watch", "id": 13, "space": "drivers", "lat": 52.52, "lon": 13.405,
                  "radius_m": 1000},
    "geo_unwatch": {"type": "geo.unwatch", "id": 14, "watch": "w1"},
    "unknown": {"type": "nope", "id": 15, "extra": {"k": [{}]}},
}

PUB = b"\x84\xa4type\xa3pub\xa2id\x01\xa7channel\xa1c\xa4data"  # msgpack, data value follows


def json_seeds():
    for k, v in MSGS.items():
        w("fuzz_json", k + ".json", json.dumps(v, ensure_ascii=(k != "pub_string")))
    w("fuzz_json", "batch.json",
      "\n".join(json.dumps(MSGS[k]) for k in ("sub", "pub_obj", "ping", "ack")) + "\n")
    w("fuzz_json", "spaces.json",
      ' \t{"type" : "pub" , "id" : 1 , "channel" : "c" , "data" : [ ] }\r\n {"type":"ping"}')
    w("fuzz_json", "dup_key.json", '{"type":"pub","id":1,"id":2,"channel":"c","data":1}')
    w("fuzz_json", "bigint.json", '{"type":"pub","id":9223372036854775807,"channel":"c",'
      '"data":[18446744073709551615,-9223372036854775808,1e308,-0.0]}')
    w("fuzz_json", "deep.json",
      '{"type":"pub","id":1,"channel":"c","data":' + "[" * 33 + "]" * 33 + "}")
    w("fuzz_json", "nul.json", '{"type":"pub","id":1,"channel":"c","data":"a\\u0000b"}')
    w("fuzz_json", "escapes.json",
      '{"type":"pub","id":1,"channel":"c","data":"\\ud83d\\ude00\\ud800\\n\\t\\/"}')
    w("fuzz_json", "bad_utf8.json", b'{"type":"pub","id":1,"channel":"c","data":"\xff\xfe"}')
    w("fuzz_json", "truncated.json", '{"type":"pub","id":1,"channel":"c","data":{"a":')


def msgpack_seeds():
    for k, v in MSGS.items():
        w("fuzz_msgpack", k + ".mp", msgpack.packb(v, use_bin_type=True))
    w("fuzz_msgpack", "batch.mp", b"".join(msgpack.packb(MSGS[k]) for k in ("sub", "pub_obj", "ping")))
    w("fuzz_msgpack", "pub_bin.mp", PUB + msgpack.packb(b"\x00\x01\xff", use_bin_type=True))
    w("fuzz_msgpack", "pub_nested.mp", PUB + msgpack.packb(
        {"b": b"\x00\x01", "f": 1.5, "u": 2**64 - 1, "i": -2**63, "a": [None, True]},
        use_bin_type=True))
    w("fuzz_msgpack", "float32.mp", PUB + b"\xca\x3f\xc0\x00\x00")
    w("fuzz_msgpack", "ext.mp", PUB + b"\xd4\x01\x02")
    w("fuzz_msgpack", "intkey.mp", PUB + b"\x81\x01\x02")
    w("fuzz_msgpack", "array32_bomb.mp", PUB + b"\xdd\x05\xf5\xe1\x00")
    w("fuzz_msgpack", "map32_bomb.mp", b"\xdf\xff\xff\xff\xff")
    w("fuzz_msgpack", "str8_long.mp", b"\x84\xa4type\xa3pub\xa2id\x01\xa7channel\xd9\x03abc")
    w("fuzz_msgpack", "reserved_c1.mp", b"\x81\xa4type\xc1")
    w("fuzz_msgpack", "dup_key.mp", b"\x83\xa4type\xa3pub\xa2id\x01\xa2id\x02")
    w("fuzz_msgpack", "bad_utf8.mp", PUB + b"\xa2\xff\xfe")


def channel_seeds():
    pairs = [("chat.*", "chat.room1"), (">", "a.b"), ("a.*.c", "a.b.c"), ("a.>", "a"),
             ("a.>", "a.b.c"), ("*", "abc"), ("a.b", "a.b"), ("a.*", "a.b.c"), ("a..b", "a.b"),
             (".a", "a"), ("a.>.b", "a.x.b"), ("x*y", "xzy"), ("a:b-c_d", "a:b-c_d"),
             ("*.*.>", "1.2.3.4"), ("A.B", "a.b"), ("chat.room1", "chat.room1.")]
    for i, (p, c) in enumerate(pairs):
        w("fuzz_channel", "pair%02d" % i, p + "\n" + c)
    w("fuzz_channel", "single", "chat.room1")
    w("fuzz_channel", "long", ".".join(["ab"] * 43))
    w("fuzz_channel", "binary", b"a\x00b\nc\xffd")


def hmsg(args, hdr, body):
    return b"HMSG %s %d %d\r\n%s%s\r\n" % (args, len(hdr), len(hdr) + len(body), hdr, body)


def nats_wire_seeds():
    ops = {
        "info": b'INFO {"server_id":"x","version":"2.9.10","headers":true,'
                b'"max_payload":1048576}\r\n',
        "msg": b"MSG rtgate.eph.chat 1 5\r\nhello\r\n",
        "msg_reply": b"MSG rtgate.dur.a.b 12 _INBOX.abc 3\r\nxyz\r\n",
        "hmsg": hmsg(b"rtgate.dur.c 2", b"NATS/1.0\r\nRtgate-Channel: c\r\nNats-Msg-Id: c:m1\r\n"
                     b"X:  y \r\n\r\n", b"hello"),
        "hmsg_status": b"HMSG _INBOX.x 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
        "ping": b"PING\r\n",
        "pong": b"pong\n",
        "ok": b"+OK\r\n",
        "err": b"-ERR 'Authorization Violation'\r\n",
        "mixed": b"PING\r\nMSG a 1 0\r\n\r\n+OK\r\nMSG b 2 _R 2\r\nhi\r\nPONG\r\n",
        "bad_size": b"MSG a 1 99999999999999999999\r\n",
        "partial": b"MSG a 1 10\r\nhel",
        "lower": b"msg a 1 2\nok\r\nhmsg a 1 reply 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
    }
    for k, v in ops.items():
        w("fuzz_nats_wire", k, v)


def users_wire_seeds():
    """One of each bus message of users/users_wire.h, and a few near misses."""
    pk = lambda v: msgpack.packb(v, use_bin_type=True)
    conns = [[1765000000000, "c1"], [1765000000001, "Zz9"]]
    msgs = {
        "heartbeat": {"n": "node-1", "g": 7},
        "hello": {"n": "node_2", "g": 0, "hello": True},
        "bye": {"n": "n3", "g": 12, "bye": True},
        "conns_full": {"n": "node-1", "fs": True, "fe": True,
                       "e": [{"u": "alice", "c": conns}, {"u": "bob@x.org", "c": [], "p": 3}]},
        "conns_delta": {"n": "node-1", "e": [{"u": "alice", "p": 18446744073709551615}]},
        "conns_chunk": {"n": "node-1", "fs": True, "e": [{"u": "u:1|2+3=4/5~6-7.8", "c": conns}]},
        "presence": {"n": "node-1", "ch": "chat.room1",
                     "e": [{"v": 1, "u": "alice", "k": 2, "i": b'{"name":"Al"}'},
                           {"v": 2, "u": "bob", "k": 0}]},
        "ask": {"n": "node-2", "r": 41, "ch": "chat.room1"},
        "answer": {"n": "node-1", "r": 41, "w": 9, "ch": "chat.room1", "end": True,
                   "e": [{"v": 9, "u": "alice", "k": 1, "i": '{"s":1}'}]},
        "unknown_keys": {"n": "node-1", "zz": [1, {"a": None}], "g": 1,
                         "e": [{"u": "a", "x": 1.5}]},
        "bad_node": {"n": "no de", "g": 1},
        "bad_client": {"n": "node-1", "e": [{"u": "alice", "c": [[1, "c-1"]]}]},
        "bad_channel": {"n": "node-1", "ch": "a..b", "e": []},
    }
    for k, v in msgs.items():
        w("fuzz_users_wire", k, pk(v))
    w("fuzz_users_wire", "int_key", b"\x81\x01\xa1x")
    w("fuzz_users_wire", "deep", pk({"n": "a", "z": [[[[[[[[[[1]]]]]]]]]]}))
    w("fuzz_users_wire", "trailing", pk({"n": "a", "g": 1}) + b"\xc0")


JWT_SECRET = b"fuzz-secret-0123456789abcdef-0123456789abcdef"  # fuzz_jwt.c's


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def jwt(header, claims, secret=JWT_SECRET, sig=None):
    signing = b64url(json.dumps(header).encode()) + b"." + b64url(json.dumps(claims).encode())
    if sig is None:
        sig = b64url(hmac.new(secret, signing, hashlib.sha256).digest())
    return signing + b"." + sig


def jwt_seeds():
    """'T' + a token (checked against every key); 'S' + header JSON, newline,
    claims JSON (signed with the HS256 secret by the harness)."""
    claims = {"sub": "u42", "exp": 1900000000, "nbf": 1700000000, "iat": 1700000000,
              "sub_allow": ["chat.*", "news.>"], "pub_allow": [], "geo_allow": ["drivers"],
              "info": {"name": "x"}}
    hs = {"alg": "HS256", "typ": "JWT"}
    tokens = {
        "hs256_valid": jwt(hs, claims),
        "hs256_wrong_secret": jwt(hs, claims, secret=b"x" * 48),
        "alg_none": jwt({"alg": "none"}, claims, sig=b""),
        "rs256_junk": jwt({"alg": "RS256"}, claims, sig=b64url(b"\x01" * 256)),
        "es256_junk": jwt({"alg": "ES256", "kid": "k"}, claims, sig=b64url(b"\x02" * 64)),
        "two_parts": b64url(b'{"alg":"HS256"}') + b"." + b64url(b"{}"),
        "crit": jwt({"alg": "HS256", "crit": ["exp"]}, claims),
        "padding": jwt(hs, claims) + b"==",
    }
    for name, tok in tokens.items():
        w("fuzz_jwt", "T-" + name, b"T" + tok)
    signed = {
        "full": (hs, claims),
        "expired": (hs, {"sub": "u", "exp": 1600000000}),
        "not_yet": (hs, {"sub": "u", "nbf": 1900000000}),
        "anon_sub": (hs, {"sub": "anon-c1"}),
        "bad_time": (hs, {"sub": "u", "exp": "soon", "iat": 1.5}),
        "deep": (hs, {"sub": "u", "info": {"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}}}),
        "patterns": (hs, {"sub": "u", "sub_allow": ["a..b", ">", "*", "a.>.b"] * 3}),
        "no_sub": ({"alg": "HS256"}, {"exp": 1900000000}),
        "alg_rs": ({"alg": "RS256"}, {"sub": "u"}),
    }
    for name, (h, c) in signed.items():
        w("fuzz_jwt", "S-" + name, b"S" + json.dumps(h).encode() + b"\n" + json.dumps(c).encode())
    w("fuzz_jwt", "S-dup_keys", b'S{"alg":"HS256","alg":"none"}\n{"sub":"a","sub":"b"}')


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def resume_id(epochs, positions):
    """An SSE id (protocol/resume.c): version 1, the epochs, then (hash, epoch
    index, seq) per position, unpadded base64url."""
    raw = bytes([1, len(epochs)])
    for e in epochs:
        raw += bytes([len(e)]) + e.encode()
    raw += bytes([len(positions)])
    for h, k, seq in positions:
        raw += h.to_bytes(4, "little") + bytes([k]) + varint(seq)
    return b64url(raw)


def resume_id_seeds():
    """'\0' + an id text (decoded as a Last-Event-ID); '\1' + bytes the
    harness turns into positions to encode and decode."""
    ids = {
        "one": resume_id(["k3x9"], [(0x811C9DC5, 0, 120)]),
        "fleet": resume_id(["Z1fA9q2LmN0b"], [(i * 7919, 0, i * 1000) for i in range(4)]),
        "two_epochs": resume_id(["a", "~" * 64], [(1, 0, 0), (2, 1, 2**64 - 1)]),
        "sixteen": resume_id(["e%d" % i for i in range(16)], [(i, i, i) for i in range(16)]),
        "bad_index": resume_id(["a"], [(1, 1, 5)]),
        "long_varint": resume_id(["a"], [(1, 0, 1)]) + b"gA",
        "padded": resume_id(["a"], [(1, 0, 1)]) + b"==",
        "empty_lists": resume_id([], []),
    }
    for name, text in ids.items():
        w("fuzz_resume_id", "D-" + name, b"\0" + text)
    w("fuzz_resume_id", "E-three", b"\1\x03" + bytes(range(60)))
    w("fuzz_resume_id", "E-shared_epoch", b"\1\x02" + b"\x01" * 12 + b"\x05abcde" + b"\x02" * 12 + b"\x00")


if __name__ == "__main__":
    json_seeds()
    msgpack_seeds()
    channel_seeds()
    nats_wire_seeds()
    users_wire_seeds()
    jwt_seeds()
    resume_id_seeds()
