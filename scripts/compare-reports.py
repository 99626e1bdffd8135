#!/usr/bin/env python3
"""Compares two indim report.json files of the same inputs (e.g. CPU and CUDA backends):
equal intruder counts except where a maxcos lies within 1e-4 of an eps, and maxcos within
1e-4 (fp32) or 1e-8 (fp64). Exit 0 when they agree.

usage: compare-reports.py A/report.json B/report.json fp32|fp64
"""
import json
import sys


def main():
    a_path, b_path, prec = sys.argv[1:4]
    a = json.load(open(a_path))["matrices"]
    b = json.load(open(b_path))["matrices"]
    if len(a) != len(b):
        print(f"{len(a)} matrices against {len(b)}")
        return 1
    tol = 1e-4 if prec == "fp32" else 1e-8
    worst, mismatches = 0.0, 0
    for x, y in zip(a, b):
        if (x["tuned_index"], x["name"], x["side"]) != (y["tuned_index"], y["name"], y["side"]):
            print("records differ in order:", x["name"], y["name"])
            return 1
        worst = max([worst] + [abs(p - q) for p, q in zip(x["maxcos"], y["maxcos"])])
        near_edge = any(abs(m - float(e)) < 1e-4 for m in x["maxcos"] for e in x["counts"])
        if x["counts"] != y["counts"] and not near_edge:
            mismatches += 1
            print("counts differ:", x["name"], x["counts"], y["counts"])
    print(f"{prec}: {len(a)} matrices, max |maxcos difference| {worst:.3e} "
          f"(limit {tol:g}), {mismatches} count mismatches")
    return 0 if worst <= tol and mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
