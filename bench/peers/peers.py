#!/usr/bin/env python3
"""Peer baselines beside indim, on the same checkpoint pairs, with the same answer checked.

Runs (pick with --runs, default all that can run here):
  a  the paper authors' procedure as they run it: per matrix, torch.linalg.svd(W.float(),
     full_matrices=False) on the GPU for base and tuned, then abs(U_t.T @ U_b).max(1)
  b  the same with numpy/scipy LAPACK (gesdd, fp32) on all CPU cores
  c  indim, CPU backend
  d  indim, GPU backend, cold (no cache)
  e  indim, GPU backend, the base already cached
All runs must give the same intruder counts (a maxcos within 1e-4 of eps excepted); then one
table of seconds and ratios prints.

usage: peers.py --indim build/indim --base B --tuned T [--k 10] [--eps 0.5] [--runs abcde]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.uint16}
SELECT = re.compile(r"\.\d+\.")
SKIP = re.compile(r"norm|embed|lm_head|(^|\.)ln_", re.I)


def safetensors_files(path):
    if os.path.isfile(path):
        return [path]
    index = [f for f in os.listdir(path) if f.endswith(".safetensors.index.json")]
    if index:
        weight_map = json.load(open(os.path.join(path, index[0])))["weight_map"]
        return sorted({os.path.join(path, f) for f in weight_map.values()})
    return [os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors")]


def load(path):
    """name -> float32 matrix, for the 2-D layer weights indim selects by default."""
    out = {}
    for f in safetensors_files(path):
        raw = open(f, "rb").read()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        for name, t in header.items():
            if name == "__metadata__" or len(t["shape"]) != 2:
                continue
            if not SELECT.search(name) or SKIP.search(name) or t["dtype"] not in DTYPES:
                continue
            b, e = t["data_offsets"]
            a = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=DTYPES[t["dtype"]])
            if t["dtype"] == "BF16":
                a = (a.astype(np.uint32) << 16).view(np.float32)
            out[name] = a.astype(np.float32).reshape(t["shape"])
    return out


def counts_of(maxcos, eps):
    return int((np.asarray(maxcos) < eps).sum())


def run_numpy(base, tuned, k):
    import scipy.linalg
    res = {}
    for name, w0 in base.items():
        u0 = scipy.linalg.svd(w0, full_matrices=False, lapack_driver="gesdd")[0]
        u = scipy.linalg.svd(tuned[name], full_matrices=False, lapack_driver="gesdd")[0]
        res[name] = np.abs(u[:, :k].T @ u0).max(axis=1)
    return res


def run_torch(base, tuned, k):
    import torch
    res = {}
    for name, w0 in base.items():
        b = torch.linalg.svd(torch.from_numpy(w0).cuda().float(), full_matrices=False)[0]
        t = torch.linalg.svd(torch.from_numpy(tuned[name]).cuda().float(), full_matrices=False)[0]
        res[name] = torch.abs(t[:, :k].T @ b).max(dim=1).values.cpu().numpy()
    torch.cuda.synchronize()
    return res


def run_indim(indim, base, tuned, k, backend, cache, out):
    cmd = [indim, "analyze", base, tuned, "--out", out, "--k", str(k), "--backend", backend, "-q"]
    cmd += ["--cache", cache] if cache else ["--no-cache"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.load(open(os.path.join(out, "report.json")))
    return {m["name"]: np.array(m["maxcos"]) for m in report["matrices"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--indim", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--tuned", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--eps", type=float, default=0.5)
    p.add_argument("--runs", default="abcde")
    p.add_argument("--json", help="also write the table here")
    args = p.parse_args()

    try:
        import torch  # noqa: F401
        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    work = tempfile.mkdtemp(prefix="indim-peers-")
    results, seconds, notes = {}, {}, {}
    for run in args.runs:
        if run in "ad" + "e" and not gpu:
            notes[run] = "skipped: no CUDA device for torch"
            continue
        t0 = time.perf_counter()  # reading the checkpoints counts, as it does for indim
        if run in "ab":
            base, tuned = load(args.base), load(args.tuned)
        if run == "a":
            results[run] = run_torch(base, tuned, args.k)
        elif run == "b":
            results[run] = run_numpy(base, tuned, args.k)
        elif run == "c":
            results[run] = run_indim(args.indim, args.base, args.tuned, args.k, "cpu", None,
                                     os.path.join(work, "c"))
        elif run == "d":
            results[run] = run_indim(args.indim, args.base, args.tuned, args.k, "cuda", None,
                                     os.path.join(work, "d"))
        elif run == "e":
            cache = os.path.join(work, "cache")
            run_indim(args.indim, args.base, args.tuned, args.k, "cuda", cache, os.path.join(work, "e0"))
            t0 = time.perf_counter()  # timed: the second fine-tune of a cached base
            results[run] = run_indim(args.indim, args.base, args.tuned, args.k, "cuda", cache,
                                     os.path.join(work, "e"))
        seconds[run] = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)

    # Same answer everywhere: counts per matrix at eps, except values within 1e-4 of eps.
    runs = list(results)
    agree = True
    if runs:
        ref = results[runs[0]]
        for run in runs[1:]:
            for name, m0 in ref.items():
                m = results[run].get(name)
                if m is None:
                    print(f"{run}: missing {name}")
                    agree = False
                    continue
                if np.any(np.abs(m0 - args.eps) < 1e-4) or np.any(np.abs(m - args.eps) < 1e-4):
                    continue
                if counts_of(m0, args.eps) != counts_of(m, args.eps):
                    print(f"{run} disagrees with {runs[0]} on {name}: "
                          f"{counts_of(m, args.eps)} vs {counts_of(m0, args.eps)} intruders")
                    agree = False
    labels = {"a": "torch.linalg.svd, GPU (paper)", "b": "numpy/scipy gesdd, CPU",
              "c": "indim cpu", "d": "indim cuda, cold", "e": "indim cuda, base cached"}
    print(f"{'run':<34}{'seconds':>10}{'vs a':>9}{'vs b':>9}{'intruders':>11}")
    rows = []
    for run in args.runs:
        if run in notes:
            print(f"{run} {labels[run]:<32}{notes[run]}")
            continue
        s = seconds[run]
        total = sum(counts_of(m, args.eps) for m in results[run].values())
        va = f"{seconds['a'] / s:.1f}x" if "a" in seconds else "-"
        vb = f"{seconds['b'] / s:.1f}x" if "b" in seconds else "-"
        print(f"{run} {labels[run]:<32}{s:>10.2f}{va:>9}{vb:>9}{total:>11}")
        rows.append({"run": run, "what": labels[run], "seconds": s, "intruders": total})
    print("counts agree" if agree else "COUNTS DISAGREE")
    if args.json:
        json.dump({"rows": rows, "agree": agree, "matrices": len(results[runs[0]]) if runs else 0},
                  open(args.json, "w"), indent=2)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
