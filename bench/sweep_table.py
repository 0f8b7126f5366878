#!/usr/bin/env python3
"""bench/sweep_table.py: the summary of one bench/sweep.sh invocation.

Usage: sweep_table.py SWEEP_JSONL RUN_TAG SUBS NOTE OUT_JSON OUT_MD

Reads the runs labelled RUN_TAG/rN/RATE/VARIANT and writes, per rate and
variant: the p99 of each repetition (median and range), server CPU per
delivery (median) and its ratio to nats-server's in the same repetition
(median of the ratios), the nats-server broker's CPU behind rtgate, the
largest flush window rtgate logged, loss, and how many runs kept p99 under
40 ms. A run that is not ok (loss, errors, timeout) is counted and shown.
"""
import json
import statistics
import sys

P99_TARGET_MS = 40.0


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec="%.1f"):
    return spec % x if x is not None else "-"


def main():
    path, tag, subs, note, out_json, out_md = sys.argv[1:7]
    subs = int(subs)
    runs = {}
    for line in open(path):
        if not line.strip():
            continue
        r = json.loads(line)
        label = r.get("label", "")
        if not label.startswith(tag + "/"):
            continue
        _, rep, rate, variant = label.split("/")
        runs[(int(rate), variant, rep)] = r
    rates = sorted({k[0] for k in runs})
    variants = []
    for k in runs:
        if k[1] not in variants:
            variants.append(k[1])
    order = ["nats-ws", "old", "new", "fixed20"]
    variants.sort(key=lambda v: order.index(v) if v in order else len(order))
    reps = sorted({k[2] for k in runs})

    summary = {"tag": tag, "note": note, "subs": subs, "p99_target_ms": P99_TARGET_MS, "rows": []}
    for rate in rates:
        for v in variants:
            p99, cpu, ratio, broker, windows, lost, ok, deliv, quiet, cores = [], [], [], [], [], 0, 0, [], [], []
            for rep in reps:
                r = runs.get((rate, v, rep))
                if not r:
                    continue
                lat = r.get("latency_us", {})
                p99.append(lat.get("p99", 0) / 1000 if lat.get("count") else None)
                s = r.get("server", {})
                c = s.get("cpu_us_per_delivery")
                cpu.append(c)
                broker.append(r.get("broker", {}).get("cpu_us_per_delivery"))
                base = runs.get((rate, "nats-ws", rep), {}).get("server", {})
                bc = base.get("cpu_us_per_delivery")
                ratio.append(c / bc if c and bc and v != "nats-ws" else None)
                fw = r.get("flush_window") or {}
                windows.append(fw.get("max_ms"))
                lost += r.get("lost", 0)
                ok += 1 if r.get("ok") else 0
                deliv.append(r.get("deliveries_per_s"))
                quiet.append(r.get("busy_before"))
                cores.append(r.get("machine", {}).get("busy_cores"))
            n_runs = len(p99)
            under = sum(1 for x in p99 if x is not None and x < P99_TARGET_MS)
            summary["rows"].append({
                "rate": rate, "deliveries_per_s_target": rate * subs, "variant": v,
                "runs": n_runs, "ok_runs": ok, "lost": lost,
                "deliveries_per_s": med(deliv),
                "p99_ms": p99, "p99_ms_median": med(p99),
                "cpu_us_per_delivery": cpu, "cpu_us_per_delivery_median": med(cpu),
                "ratio_to_nats_server_median": med(ratio),
                "broker_cpu_us_per_delivery_median": med(broker),
                "max_window_ms": [w for w in windows],
                "runs_p99_under_target": under,
                "machine_busy_before_median": med(quiet),
                "machine_busy_cores": cores,
            })
    with open(out_json, "w") as f:
        json.dump(summary, f, indent=1)

    out = ["### Fan-out rate sweep: %d subscribers, %s" % (subs, tag), "",
           "%s. Each cell: median over the repetitions; p99 range in brackets. CPU is the "
           "server's µs per delivery (rtgate alone; the nats-server behind it is the broker "
           "column); ratio = rtgate / nats-server (nats-ws) in the same repetition. "
           "`p99<%d` = runs whose p99 stayed under %d ms; `busy before` = how busy the machine was "
           "(all cores) in the second before each run, and `cores during` the busy cores during each "
           "run: the servers and the load generator take about 1 to 1.7 of them, so more is "
           "other jobs on the machine." % (
               note, P99_TARGET_MS, P99_TARGET_MS), ""]
    head = "| deliveries/s | variant | delivered/s | p99 ms [range] | p99<%d | µs/delivery | ratio | broker µs/del | max window ms | lost | ok | busy before | cores during |" % P99_TARGET_MS
    out += [head, "|---" * (head.count("|") - 1) + "|"]
    for row in summary["rows"]:
        p = [x for x in row["p99_ms"] if x is not None]
        rng = "[%.1f–%.1f]" % (min(p), max(p)) if p else ""
        wins = [w for w in row["max_window_ms"] if w is not None]
        win = "-" if row["variant"] == "nats-ws" else (
            "/".join(str(w) if w else "base" for w in row["max_window_ms"]) if wins else "base")
        bb = row["machine_busy_before_median"]
        during = "/".join("%.1f" % c for c in row["machine_busy_cores"] if c is not None) or "-"
        out.append("| %dk | %s | %s | %s %s | %d/%d | %s | %s | %s | %s | %d | %d/%d | %s | %s |" % (
            row["deliveries_per_s_target"] // 1000, row["variant"],
            fmt(row["deliveries_per_s"], "%.0f"), fmt(row["p99_ms_median"]), rng,
            row["runs_p99_under_target"], row["runs"], fmt(row["cpu_us_per_delivery_median"], "%.2f"),
            fmt(row["ratio_to_nats_server_median"], "%.2f"),
            fmt(row["broker_cpu_us_per_delivery_median"], "%.2f"), win, row["lost"],
            row["ok_runs"], row["runs"], "%d%%" % round(bb * 100) if bb is not None else "-",
            during))
    out.append("")
    with open(out_md, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
