#!/usr/bin/env python3
"""bench/plot.py RESULTS.jsonl OUTDIR: side-by-side plots of bench/run.sh's runs (plain SVG).

  OUTDIR/latency-<scenario>.svg   latency by percentile, one line per variant (log latency axis;
                                  percentile axis in "nines" like rtgate-load's own plot)
  OUTDIR/cpu-per-delivery.svg     server CPU µs per delivered message, per scenario and variant
"""
import json
import math
import sys

COLORS = {"nats-ws": "#d62728", "rtgate-nats": "#1f77b4", "rtgate-mem": "#7f7f7f"}
NAMES = {
    "nats-ws": "nats-server WebSocket (NATS publisher)",
    "rtgate-nats": "rtgate, NATS engine (same NATS publisher)",
    "rtgate-mem": "rtgate, memory engine (WebSocket publisher; not like for like)",
}


def load(path):
    runs, order = {}, []
    with open(path) as f:
        for line in f:
            if not line.strip():
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


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nines(q):
    return 6.0 if q >= 100 else -math.log10(1 - q / 100.0)


def latency_plot(sc, runs, path):
    W, H, L, R, T, B = 900, 580, 80, 30, 112, 60
    pw, ph = W - L - R, H - T - B
    series = []
    for var in ("nats-ws", "rtgate-nats", "rtgate-mem"):
        d = runs.get((sc, var))
        if not d or not d.get("latency_pct") or not d["latency_us"]["count"]:
            continue
        series.append((var, d))
    if not series:
        return False
    xmax = 4.0  # up to 99.99%
    vals = [v for _, d in series for q, v in d["latency_pct"] if q <= 99.99 and v > 0]
    lo = 10 ** math.floor(math.log10(max(min(vals), 1.0)))
    hi = 10 ** math.ceil(math.log10(max(vals) * 1.05))
    ly0, ly1 = math.log10(lo), math.log10(hi)

    def X(q):
        return L + pw * min(nines(q), xmax) / xmax

    def Y(us):
        return T + ph - ph * (math.log10(max(us, lo)) - ly0) / (ly1 - ly0)

    d0 = series[0][1]
    o = []
    o.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">'
    )
    o.append('<rect width="100%" height="100%" fill="white"/>')
    title = (
        f"{sc}: {d0['subs']:,} subscribers, {d0['channels']:,} channel"
        f"{'s' if d0['channels'] != 1 else ''}, {d0['rate_target']:.0f} msg/s, "
        f"{d0['payload']} B payload"
    )
    o.append(f'<text x="{L}" y="24" font-size="16">{esc(title)}</text>')
    o.append(
        f'<text x="{L}" y="44" fill="#444">end-to-end latency by percentile '
        f"(slot time to receive), log scale; servers pinned to one core</text>"
    )
    labels = ["0%", "90%", "99%", "99.9%", "99.99%"]
    for i in range(int(xmax) + 1):
        x = L + pw * i / xmax
        o.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + ph}" stroke="#ddd"/>')
        o.append(f'<text x="{x:.1f}" y="{T + ph + 18}" text-anchor="middle">{labels[i]}</text>')
    e = int(ly0)
    while e <= ly1:
        for m in (1, 2, 5):
            v = m * 10**e
            if v < lo or v > hi:
                continue
            y = Y(v)
            txt = f"{v / 1000:g} ms" if v >= 1000 else f"{v:g} µs"
            o.append(
                f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" '
                f'stroke="{"#ccc" if m == 1 else "#eee"}"/>'
            )
            o.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{txt}</text>')
        e += 1
    o.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 16}" text-anchor="middle">percentile</text>')
    for i, (var, d) in enumerate(series):
        pts = [(q, v) for q, v in d["latency_pct"] if q <= 99.99]
        path_pts = " ".join(f"{X(q):.1f},{Y(v):.1f}" for q, v in pts)
        o.append(
            f'<polyline fill="none" stroke="{COLORS[var]}" stroke-width="2" points="{path_pts}"/>'
        )
        for q, v in pts:
            o.append(f'<circle cx="{X(q):.1f}" cy="{Y(v):.1f}" r="2.5" fill="{COLORS[var]}"/>')
        s = d.get("server") or {}
        ly = 64 + 16 * i
        o.append(f'<rect x="{L}" y="{ly - 6}" width="14" height="4" fill="{COLORS[var]}"/>')
        extra = (
            f"p50 {d['latency_us']['p50'] / 1000:.2f} ms, p99 {d['latency_us']['p99'] / 1000:.2f} ms, "
            f"{s.get('cpu_us_per_delivery', float('nan')):.2f} µs CPU/delivery, "
            f"lost {d['lost']}"
        )
        o.append(f'<text x="{L + 20}" y="{ly}">{esc(NAMES[var])}: {esc(extra)}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")
    return True


def cpu_plot(order, runs, path):
    rows = []
    for sc in order:
        vals = {}
        for var in ("nats-ws", "rtgate-nats", "rtgate-mem"):
            d = runs.get((sc, var))
            v = (d or {}).get("server", {}).get("cpu_us_per_delivery") if d else None
            if d and d["scenario"] != "idle" and v:
                vals[var] = v
        if vals:
            rows.append((sc, vals))
    if not rows:
        return False
    W, L, R, T, B = 900, 120, 30, 70, 50
    bh, gap = 12, 10
    H = T + B + len(rows) * (3 * bh + gap)
    pw = W - L - R
    allv = [v for _, vals in rows for v in vals.values()]
    lo = 10 ** math.floor(math.log10(min(allv)))
    hi = 10 ** math.ceil(math.log10(max(allv) * 1.05))

    def X(v):
        return L + pw * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    o = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{L}" y="24" font-size="16">server CPU per delivered message (µs, log scale; '
        f"lower is better)</text>",
    ]
    for i, var in enumerate(("nats-ws", "rtgate-nats", "rtgate-mem")):
        o.append(f'<rect x="{L + i * 260}" y="36" width="14" height="10" fill="{COLORS[var]}"/>')
        o.append(f'<text x="{L + i * 260 + 20}" y="45">{esc(var)}</text>')
    e = int(math.log10(lo))
    while 10**e <= hi:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo <= v <= hi:
                x = X(v)
                o.append(
                    f'<line x1="{x:.1f}" y1="{T - 10}" x2="{x:.1f}" y2="{H - B}" '
                    f'stroke="{"#ccc" if m == 1 else "#eee"}"/>'
                )
                o.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{v:g}</text>')
        e += 1
    y = T
    for sc, vals in rows:
        o.append(
            f'<text x="{L - 8}" y="{y + 1.5 * bh + 4}" text-anchor="end">{esc(sc)}</text>'
        )
        for i, var in enumerate(("nats-ws", "rtgate-nats", "rtgate-mem")):
            if var in vals:
                x1 = X(vals[var])
                o.append(
                    f'<rect x="{L}" y="{y + i * bh}" width="{x1 - L:.1f}" height="{bh - 1}" '
                    f'fill="{COLORS[var]}"/>'
                )
                o.append(
                    f'<text x="{x1 + 4:.1f}" y="{y + i * bh + bh - 2}" font-size="10">'
                    f"{vals[var]:.2f}</text>"
                )
        y += 3 * bh + gap
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")
    return True


def main():
    order, runs = load(sys.argv[1])
    outdir = sys.argv[2]
    for sc in order:
        latency_plot(sc, runs, f"{outdir}/latency-{sc}.svg")
    cpu_plot(order, runs, f"{outdir}/cpu-per-delivery.svg")


if __name__ == "__main__":
    main()
