#!/usr/bin/python3
"""Writes the seed corpus of the PROXY protocol v2 parser
(edge_proxy_v2_parse in edge/proxy_v2.c, corpus/fuzz_proxy_v2/): valid
headers of every command and family, with TLVs and with the client's first
bytes after them, and the malformed ones the parser must refuse. Re-run it
after changing it."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def header(ver_cmd, fam, body):
    return SIG + bytes([ver_cmd, fam]) + struct.pack(">H", len(body)) + body


def w(name, data):
    d = os.path.join(HERE, "corpus", "fuzz_proxy_v2")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


TCP4 = bytes([203, 0, 113, 7, 10, 0, 0, 1]) + struct.pack(">HH", 40000, 443)
TCP6 = bytes.fromhex("20010db8000000000000000000000005") + bytes(15) + b"\x01" + \
    struct.pack(">HH", 40000, 443)
MAPPED = bytes(10) + b"\xff\xff" + bytes([198, 51, 100, 9]) + bytes(16) + struct.pack(">HH", 1, 2)
UNIX = b"/run/client.sock".ljust(108, b"\0") + b"/run/rtgate.sock".ljust(108, b"\0")
TLVS = (b"\x01" + struct.pack(">H", 8) + b"http/1.1"          # ALPN
        + b"\x02" + struct.pack(">H", 11) + b"example.com"    # authority
        + b"\x04" + struct.pack(">H", 3) + b"\0\0\0"          # NOOP
        + b"\x20" + struct.pack(">H", 5) + b"\x07\0\0\0\0")   # SSL, no sub-TLVs

w("tcp4", header(0x21, 0x11, TCP4))
w("tcp4_then_http", header(0x21, 0x11, TCP4) + b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
w("tcp4_then_tls", header(0x21, 0x11, TCP4) + bytes.fromhex("160301020001"))
w("tcp4_tlvs", header(0x21, 0x11, TCP4 + TLVS))
w("tcp6", header(0x21, 0x21, TCP6))
w("tcp6_mapped", header(0x21, 0x21, MAPPED))
w("unix", header(0x21, 0x31, UNIX))
w("local", header(0x20, 0x00, b""))
w("local_with_addresses", header(0x20, 0x11, TCP4))
w("unspec", header(0x21, 0x00, b""))
w("half", header(0x21, 0x11, TCP4)[:20])
w("signature_only", SIG)
w("v1_text", b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 80\r\n")
w("http", b"GET /ws HTTP/1.1\r\n\r\n")
w("version1", header(0x11, 0x11, TCP4))
w("command2", header(0x22, 0x11, TCP4))
w("family4", header(0x21, 0x41, TCP4))
w("dgram", header(0x21, 0x12, TCP4))
w("short_inet", header(0x21, 0x11, TCP4[:8]))
w("short_inet6", header(0x21, 0x21, TCP4))
w("tlv_overrun", header(0x21, 0x11, TCP4 + b"\x04\x00\x09abc"))
w("tlv_stray", header(0x21, 0x11, TCP4 + b"\x04\x00"))
w("too_long", SIG + b"\x21\x11\xff\xff" + TCP4)
w("max_length", header(0x21, 0x11, TCP4 + b"\x04" + struct.pack(">H", 1040 - 16 - 12 - 3)
                       + bytes(1040 - 16 - 12 - 3)))
