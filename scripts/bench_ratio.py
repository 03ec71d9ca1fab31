#!/usr/bin/env python3
"""Prints throughput ratios from one Google Benchmark JSON run.

Usage: bench_ratio.py RESULTS.json [--candidate PREFIX]

Benchmarks are grouped by everything after their first path segment (for example
"/threads:2"), so "memgov_ledger/threads:2" is compared with "shared_atomic/threads:2".
With repetitions, the median aggregate is used. The ratio is candidate items_per_second over
peer items_per_second (or peer time over candidate time when no items are reported): above 1
means the candidate is faster.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--candidate", default="memgov", help="name prefix of the candidate (default: memgov)")
    args = ap.parse_args()
    with open(args.results) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"])
        head, _, tail = name.partition("/")
        rows[(head, tail)] = b
    groups = {}
    for (head, tail), b in rows.items():
        groups.setdefault(tail, {})[head] = b
    print(f"{'group':<28} {'implementation':<34} {'time/op':>12} {'ratio':>8}")
    for tail in sorted(groups):
        impls = groups[tail]
        cands = [h for h in impls if h.startswith(args.candidate)]
        for cand in sorted(cands):
            c = impls[cand]
            for peer in sorted(impls):
                if peer in cands:
                    continue
                p = impls[peer]
                if "items_per_second" in c and "items_per_second" in p:
                    ratio = c["items_per_second"] / p["items_per_second"]
                else:
                    ratio = p["real_time"] / c["real_time"]
                print(f"{tail or '-':<28} {cand + ' vs ' + peer:<34} "
                      f"{c['real_time']:>9.2f} {c['time_unit']:<2} {ratio:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
