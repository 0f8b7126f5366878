#!/usr/bin/env python3
"""bench/table.py RESULTS.jsonl: the tables of bench/run.sh (markdown) from rtgate-load's lines.

Each line's `label` is SCENARIO/VARIANT with VARIANT one of nats-ws (nats-server's WebSocket
listener, the baseline), rtgate-nats (rtgate's NATS engine, the same NATS publisher: like for
like) and rtgate-mem (memory engine, published through WebSocket: not like for like).
Ratios are rtgate / nats-server: below 1 is better for rtgate.
"""
import json
import sys

VARIANTS = ["nats-ws", "rtgate-nats", "rtgate-mem"]


def load(path):
    runs = {}
    order = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            label = d.get("label", "")
            if "/" not in label:
                continue
            sc, var = label.split("/", 1)
            if sc not in order:
                order.append(sc)
            runs[(sc, var)] = d
    return order, runs


def g(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return None
        d = d[k]
    return d


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return f"{v:,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def lat(d, q):
    v = g(d, "latency_us", q)
    if v is None or not g(d, "latency_us", "count"):
        return None
    return v / 1000.0  # ms


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def metrics(d):
    idle = d["scenario"] == "idle"
    m = {
        "cpu_deliv": None if idle else g(d, "server", "cpu_us_per_delivery"),
        "util": None if idle else g(d, "server", "cpu_util"),
        "broker_deliv": None if idle else g(d, "broker", "cpu_us_per_delivery"),
        "p50": None if idle else lat(d, "p50"),
        "p99": None if idle else lat(d, "p99"),
        "cpu_conn": g(d, "server", "cpu_us_per_connection"),
        "rss_conn": g(d, "server", "rss_bytes_per_conn"),
    }
    if m["cpu_deliv"] is not None and m["broker_deliv"] is not None:
        m["sys_deliv"] = m["cpu_deliv"] + m["broker_deliv"]
    else:
        m["sys_deliv"] = m["cpu_deliv"]
    return m


def main():
    order, runs = load(sys.argv[1])
    out = []
    out.append("### Every run\n")
    out.append(
        "| scenario | variant | subs | ch | msg/s | connected | delivered/s | lost | dup | ooo | "
        "p50 ms | p99 ms | p99.9 ms | server µs/delivery | server cores | NATS µs/delivery "
        "| µs/conn set-up | RSS B/conn | busy cores (machine) | ok |"
    )
    out.append("|" + "---|" * 20)
    for sc in order:
        for var in VARIANTS:
            d = runs.get((sc, var))
            if not d:
                continue
            m = metrics(d)
            idle = d["scenario"] == "idle"
            out.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} "
                "| {} | {} | {} | {} |".format(
                    sc,
                    var,
                    fmt(d["subs"]),
                    fmt(d["channels"]),
                    "-" if idle else fmt(d["rate_target"], 0),
                    fmt(d["connected"]),
                    "-" if idle else fmt(d["deliveries_per_s"], 0),
                    "-" if idle else fmt(d["lost"]),
                    "-" if idle else fmt(d["dup"]),
                    "-" if idle else fmt(d["ooo"]),
                    fmt(m["p50"], 2),
                    fmt(m["p99"], 2),
                    fmt(None if idle else lat(d, "p999"), 2),
                    fmt(m["cpu_deliv"], 2),
                    fmt(m["util"], 2),
                    fmt(m["broker_deliv"], 2) if var == "rtgate-nats" else "-",
                    fmt(m["cpu_conn"], 0),
                    fmt(m["rss_conn"], 0),
                    fmt(g(d, "machine", "busy_cores"), 2),
                    fmt(d["ok"]),
                )
            )
    out.append("")
    for var, title in (
        ("rtgate-nats", "rtgate (NATS engine) / nats-server, like for like: same NATS publisher"),
        (
            "rtgate-mem",
            "rtgate (memory engine, published via WebSocket) / nats-server: NOT like for like",
        ),
    ):
        out.append(f"### Ratios: {title}\n")
        out.append(
            "| scenario | server µs/delivery rtgate | nats-server | ratio | rtgate+NATS / nats-server "
            "| p50 ratio | p99 ratio | µs/conn set-up ratio | RSS/conn ratio |"
        )
        out.append("|" + "---|" * 9)
        for sc in order:
            a, b = runs.get((sc, var)), runs.get((sc, "nats-ws"))
            if not a or not b:
                continue
            ma, mb = metrics(a), metrics(b)
            out.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    sc,
                    fmt(ma["cpu_deliv"], 2),
                    fmt(mb["cpu_deliv"], 2),
                    fmt(ratio(ma["cpu_deliv"], mb["cpu_deliv"]), 2),
                    fmt(ratio(ma["sys_deliv"], mb["cpu_deliv"]), 2) if var == "rtgate-nats" else "-",
                    fmt(ratio(ma["p50"], mb["p50"]), 2),
                    fmt(ratio(ma["p99"], mb["p99"]), 2),
                    fmt(ratio(ma["cpu_conn"], mb["cpu_conn"]), 2),
                    fmt(ratio(ma["rss_conn"], mb["rss_conn"]), 2),
                )
            )
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
