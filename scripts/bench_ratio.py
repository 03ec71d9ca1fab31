#!/usr/bin/env python3
"""Prints throughput ratios from Google Benchmark JSON runs.

Usage: bench_ratio.py RESULTS.json [MORE.json ...] [--candidate PREFIX]

Benchmarks are grouped by everything after their first path segment (for example
"/threads:2" or "/P1/steady"), so "memgov_ledger/threads:2" is compared with
"shared_atomic/threads:2". With repetitions, the median aggregate is used. The ratio is
candidate items_per_second over peer items_per_second (or peer time over candidate time when no
items are reported): above 1 means the candidate is faster. "time/op" is the time per item
(1 / items_per_second) when items are reported, else the benchmark's time.

With several files (separate runs of the benchmark process), each row shows the ratio of every
run, then their median and range; the times are the median over the runs. A `faults_per_op`
counter is shown (median over the runs) when present.
"""
import argparse
import json
import re
import statistics
import sys

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if b.get("error_occurred"):
            continue
        name = b.get("run_name", b["name"])
        # Google Benchmark appends how a benchmark is run; that is not part of the group.
        name = re.sub(r"/(iterations:\d+|manual_time|process_time|real_time)(?=/|$)", "", name)
        head, _, tail = name.partition("/")
        rows[(head, tail)] = b
    groups = {}
    for (head, tail), b in rows.items():
        groups.setdefault(tail, {})[head] = b
    return groups


def time_per_op_ns(b):
    if "items_per_second" in b:
        return 1e9 / b["items_per_second"]
    return b["real_time"] * UNIT_NS[b["time_unit"]]


def ratio(c, p):
    if "items_per_second" in c and "items_per_second" in p:
        return c["items_per_second"] / p["items_per_second"]
    return time_per_op_ns(p) / time_per_op_ns(c)


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.2f} ns"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--candidate", default="memgov", help="name prefix of the candidate (default: memgov)")
    args = ap.parse_args()
    runs = [load(p) for p in args.results]
    tails = sorted({t for g in runs for t in g})
    many = len(runs) > 1
    header = f"{'group':<22} {'implementation':<36} {'cand time/op':>12} {'peer time/op':>12}"
    header += f" {'ratio':>8}" if not many else f" {'median':>8} {'range':>15}  per run"
    print(header)
    for tail in tails:
        impls = sorted({h for g in runs for h in g.get(tail, {})})
        cands = [h for h in impls if h.startswith(args.candidate)]
        for cand in cands:
            for peer in impls:
                if peer in cands:
                    continue
                pairs = [(g[tail][cand], g[tail][peer]) for g in runs
                         if cand in g.get(tail, {}) and peer in g.get(tail, {})]
                if not pairs:
                    continue
                rs = [ratio(c, p) for c, p in pairs]
                ct = statistics.median(time_per_op_ns(c) for c, _ in pairs)
                pt = statistics.median(time_per_op_ns(p) for _, p in pairs)
                line = f"{tail or '-':<22} {cand + ' vs ' + peer:<36} {fmt_ns(ct):>12} {fmt_ns(pt):>12}"
                if many:
                    spread = f"{min(rs):.3g}-{max(rs):.3g}x"
                    line += (f" {statistics.median(rs):>7.3g}x {spread:>15}  "
                             + " ".join(f"{r:.3g}" for r in rs))
                else:
                    line += f" {rs[0]:>7.3g}x"
                print(line)
    faults = {}
    for g in runs:
        for tail, impls in g.items():
            for head, b in impls.items():
                if "faults_per_op" in b:
                    faults.setdefault((head, tail), []).append(b["faults_per_op"])
    if faults:
        print("\npage faults per operation (median over the runs):")
        for (head, tail), v in sorted(faults.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            print(f"  {head + '/' + tail:<36} {statistics.median(v):.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
