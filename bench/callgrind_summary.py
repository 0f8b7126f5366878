#!/usr/bin/env python3
"""Summarise one callgrind output file (one dump part) for bench/callgrind.sh.

callgrind_annotate lists functions; this adds what the report needs and
callgrind_annotate does not print: self Ir per shared object (rtgate's own code,
libwebsockets, libuv, libc, jansson, ...), the call counts of a few functions
that count events (sink_deliver = one delivery to one subscriber, gw_session_open
= one WebSocket session, write_frame = one frame, send/epoll_ctl = syscalls), and
who calls a given function.

Usage: callgrind_summary.py FILE [--per EVENT_FN] [--callers FN ...] [--json]
  --per FN      divide by the number of calls of FN (default sink_deliver)
  --callers FN  also list the callers of FN with their inclusive Ir
  --json        print the numbers as one JSON object instead of text

Inclusive Ir is self + the cost of calls out of the function (calls to itself
left out), as callgrind_annotate --inclusive=yes computes it.
"""
import json
import re
import sys
from collections import defaultdict

COUNTED = [
    "sink_deliver", "fo_publish", "write_frame", "gw_session_open", "gw_session_closed",
    "lws_write", "lws_callback_on_writable", "send", "__send", "__libc_send", "writev",
    "recv", "__libc_recv", "read", "epoll_ctl", "epoll_wait", "malloc", "free", "calloc",
    "realloc", "_lws_log", "lwsl_emit_stderr", "json_loads", "json_loadb", "json_dumps",
    "json_dumpb", "json_object_set_new_nocheck", "vsnprintf", "__vsnprintf_internal",
    "clock_gettime", "__clock_gettime",
]


# Static functions of the stripped Debian 12 libraries, named from the __func__ and
# __FILE__ strings they reference (objdump), valid only for the exact builds below.
# libwebsockets17 4.1.6-3 is built with _DEBUG: its debug-level log calls and the
# sanity_assert_* checks are compiled in.
KNOWN = {
    "28e6afed50d5a86798a157b53b8b017e96e0f6a5": {  # libwebsockets.so.17 (4.1.6-3)
        0x106e0: "sanity_assert_no_sockfd_traces (_DEBUG only; scans the whole fd table)",
        0x2c000: "lws_parse (HTTP header parser, a _lws_log call per byte)",
        0x1efe0: "lws_issue_raw",
        0x3d180: "rops_write_role_protocol_ws",
        0x43800: "lws_issue_raw_ext_access",
        0x427b0: "lws_parse_ws",
        0x3f020: "rops_handle_POLLIN_ws",
        0x33dd0: "lws_read_h1",
        0x1bd70: "SHA-1 (Sec-WebSocket-Accept)",
        0x1c3d0: "SHA-1 (Sec-WebSocket-Accept)",
    },
    "f4c8e3456a6c9d4da77a057f53a815dbb0abe6b1": {  # libuv.so.1.0.0 (1.44.2-1+deb12u1)
        0x17830: "uv__poll_stop (+ uv__platform_invalidate_fd, tail call)",
    },
}
_build_ids = {}


def build_id(path):
    if path not in _build_ids:
        bid = None
        try:
            import subprocess
            out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True).stdout
            m = re.search(r"Build ID: ([0-9a-f]+)", out)
            bid = m.group(1) if m else None
        except OSError:
            pass
        _build_ids[path] = bid
    return _build_ids[path]


def label(ob, fn):
    """fn, with the name of a known stripped static function added."""
    if ob and fn and fn.startswith("0x"):
        names = KNOWN.get(build_id(ob) or "", {})
        try:
            name = names.get(int(fn, 16))
        except ValueError:
            name = None
        if name:
            return "%s = %s" % (fn, name)
    return fn


def obj_class(ob):
    base = ob.rsplit("/", 1)[-1]
    if base == "rtgate":
        return "rtgate"
    for key, name in (("libwebsockets", "libwebsockets"), ("libuv", "libuv"),
                      ("libjansson", "jansson"), ("libc.so", "libc"), ("libmsgpack", "msgpack"),
                      ("ld-linux", "ld.so"), ("libnats", "nats.c"), ("libssl", "openssl"),
                      ("libcrypto", "openssl"), ("libz", "zlib"), ("libm.so", "libm")):
        if key in base:
            return name
    return base


def parse(path):
    names = {"ob": {}, "fl": {}, "fn": {}}
    space = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl",
             "cfl": "fl", "fn": "fn", "cfn": "fn"}
    self_ir = defaultdict(int)          # (ob, fn) -> self Ir
    call_out = defaultdict(int)         # (ob, fn) -> Ir of calls to other functions
    calls = defaultdict(int)            # callee (ob, fn) -> number of calls
    edges = defaultdict(lambda: [0, 0]) # (caller, callee) -> [calls, inclusive Ir]
    fn_file = {}
    meta = {}
    ob = fl = fn = None
    cob = cfn = None
    pending = None  # (callee, count) when the next cost line is a call's cost
    ref = re.compile(r"\((\d+)\)(?: (.*))?$")

    def resolve(kind, val):
        m = ref.match(val)
        if not m:
            return val
        table = names[space[kind]]
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), val)

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                key = (ob, fn)
                if pending is not None:
                    callee, n = pending
                    e = edges[(key, callee)]
                    e[0] += n
                    e[1] += cost
                    calls[callee] += n
                    if callee != key:
                        call_out[key] += cost
                    pending = None
                    cob = cfn = None
                else:
                    self_ir[key] += cost
                continue
            if "=" in line and not line.startswith(("desc:", "cmd:", "events:")):
                kind, val = line.split("=", 1)
                if kind == "calls":
                    n = int(val.split()[0])
                    pending = (((cob or ob), cfn), n)
                    continue
                if kind in ("jump", "jcnd"):
                    continue
                if kind not in space:
                    continue
                name = resolve(kind, val)
                if kind == "ob":
                    ob = name
                elif kind == "fl":
                    fl = name
                elif kind == "fn":
                    fn = name
                    fn_file.setdefault((ob, fn), fl)
                    cob = cfn = None
                elif kind == "cob":
                    cob = name
                elif kind == "cfn":
                    cfn = name
                continue
            if ":" in line:
                k, v = line.split(":", 1)
                meta[k.strip()] = v.strip()
    return self_ir, call_out, calls, edges, fn_file, meta


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    path = args[0]
    per = "sink_deliver"
    callers = []
    as_json = False
    i = 1
    while i < len(args):
        if args[i] == "--per":
            per = args[i + 1]
            i += 2
        elif args[i] == "--callers":
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                callers.append(args[i])
                i += 1
        elif args[i] == "--json":
            as_json = True
            i += 1
        else:
            print("callgrind_summary.py: unknown option " + args[i], file=sys.stderr)
            return 2
    self_ir, call_out, calls, edges, fn_file, meta = parse(path)
    total = sum(self_ir.values())
    by_obj = defaultdict(int)
    for (ob, _fn), v in self_ir.items():
        by_obj[obj_class(ob or "?")] += v
    count = defaultdict(int)
    for (ob, fn), n in calls.items():
        if fn in COUNTED:
            count[fn] += n
    denom = count.get(per, 0)
    own = sorted(((v, fn, fn_file.get((ob, fn), "?")) for (ob, fn), v in self_ir.items()
                  if obj_class(ob or "?") == "rtgate"), reverse=True)
    incl = {k: self_ir.get(k, 0) + call_out.get(k, 0) for k in set(self_ir) | set(call_out)}
    own_incl = sorted(((v, fn, fn_file.get((ob, fn), "?")) for (ob, fn), v in incl.items()
                       if obj_class(ob or "?") == "rtgate" and fn not in ("main", "(below main)")),
                      reverse=True)
    if as_json:
        print(json.dumps({"file": path, "trigger": meta.get("desc", ""), "total_ir": total,
                          "per": per, "per_count": denom,
                          "ir_per": round(total / denom, 1) if denom else None,
                          "by_object": dict(sorted(by_obj.items(), key=lambda kv: -kv[1])),
                          "calls": dict(sorted(count.items()))}))
        return 0
    print("total Ir %d; %s called %d times; Ir per %s call %s" %
          (total, per, denom, per, "%.0f" % (total / denom) if denom else "n/a"))
    print()
    print("## self Ir by object (shares of this part; the kernel is not seen by callgrind)")
    for name, v in sorted(by_obj.items(), key=lambda kv: -kv[1]):
        print("%16d %5.1f%%  %-14s %s" % (v, 100.0 * v / total if total else 0, name,
                                          "%8.0f per %s" % (v / denom, per) if denom else ""))
    print()
    print("## call counts (all call sites; divided by the %s count)" % per)
    for fn, n in sorted(count.items(), key=lambda kv: -kv[1]):
        print("%12d  %-28s %s" % (n, fn, "%8.3f" % (n / denom) if denom else ""))
    print()
    print("## rtgate's own functions, self Ir (top 25)")
    for v, fn, fl in own[:25]:
        print("%14d %5.1f%% %8s  %s (%s)" % (v, 100.0 * v / total if total else 0,
                                             "%.0f" % (v / denom) if denom else "", fn, fl))
    print()
    print("## rtgate's own functions, inclusive Ir (top 25; Ir per %s call)" % per)
    for v, fn, fl in own_incl[:25]:
        print("%14d %5.1f%% %8s  %s (%s)" % (v, 100.0 * v / total if total else 0,
                                             "%.0f" % (v / denom) if denom else "", fn, fl))
    print()
    print("## library functions, self Ir (top 20; stripped static functions named where known)")
    libs = sorted(((v, ob, fn) for (ob, fn), v in self_ir.items()
                   if obj_class(ob or "?") != "rtgate"), reverse=True)
    for v, ob, fn in libs[:20]:
        print("%14d %5.1f%% %8s  %s [%s]" % (v, 100.0 * v / total if total else 0,
                                             "%.0f" % (v / denom) if denom else "",
                                             label(ob, fn), (ob or "?").rsplit("/", 1)[-1]))
    for want in callers:
        print()
        print("## callers of %s (calls, inclusive Ir of those calls)" % want)
        rows = sorted(((e[1], e[0], caller) for (caller, callee), e in edges.items()
                       if callee[1] == want), reverse=True)
        for ir, n, caller in rows[:15]:
            print("%14d %10d  %s [%s]" % (ir, n, label(caller[0], caller[1]),
                                          (caller[0] or "?").rsplit("/", 1)[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
