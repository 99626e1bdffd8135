#!/usr/bin/env python3
"""A training run's checkpoints against their base: indim in one call against the authors'
procedure, on the same machine and cores, with the counts checked equal.

Generates a TinyLlama-1.1B-shaped bf16 base (hidden 2048, intermediate 5632, k/v 256 rows;
--layers of its 22 blocks) and --checkpoints LoRA checkpoints of one run as PEFT adapter folders
run/checkpoint-STEP (r 16, alpha 32, all seven projections; B grows with the step, A drifts),
then times
  indim   `indim analyze BASE run/checkpoint-* --workers CORES --no-cache`: every checkpoint in
          one call, the base decomposed once, the adapters by the exact low-rank route;
  authors per checkpoint and matrix, as the paper's code: W = W0 + s B A in fp32,
          torch.linalg.svd(W0) and torch.linalg.svd(W) (full_matrices=False), then
          abs(U[:, :k].T @ U0).max(1), counted below each eps; torch on CORES threads.
Both read the same files; the counts must agree at every eps of the sweep except where a
max |cos| lies within 1e-4 of eps. Prints one JSON line with both times and the ratio.

usage: trajectory.py --indim build/indim --dir /tmp/traj [--layers 2] [--checkpoints 10]
needs: /usr/bin/python3 with numpy and torch (Debian python3-numpy, python3-torch)
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HIDDEN, INTER, KV = 2048, 5632, 256
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (KV, HIDDEN),
          "self_attn.v_proj": (KV, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN),
          "mlp.down_proj": (HIDDEN, INTER)}
RANK, ALPHA, K = 16, 32, 10
EPS = [round(0.1 * i, 1) for i in range(1, 10)]


def bf16_bytes(x):
    """float32 -> bf16 (round to nearest even), little-endian bytes."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).tobytes()


def bf16_values(b, shape):
    return (np.frombuffer(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype, shape, bytes), written in name order."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text.encode())
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def trained_like(rng, out, inp):
    """U diag(s) V^T with s_i = (i + 1)^-0.6 and random orthonormal U, V."""
    p = min(out, inp)
    u = np.linalg.qr(rng.standard_normal((out, p)))[0]
    v = np.linalg.qr(rng.standard_normal((inp, p)))[0]
    s = (np.arange(p) + 1.0) ** -0.6
    return ((u * s) @ v.T).astype(np.float32)


def generate(d, layers, checkpoints, seed=20241028):
    rng = np.random.default_rng(seed)
    names = [f"model.layers.{l}.{t}" for l in range(layers) for t in SHAPES]
    base = {}
    for n in names:
        out, inp = SHAPES[n.split(".", 3)[3]]
        base[n + ".weight"] = ("BF16", (out, inp), bf16_bytes(trained_like(rng, out, inp)))
    write_safetensors(os.path.join(d, "base.safetensors"), base)
    final = {}
    for n in names:
        out, inp = SHAPES[n.split(".", 3)[3]]
        a0 = rng.standard_normal((RANK, inp)) / np.sqrt(inp)
        da = rng.standard_normal((RANK, inp)) / np.sqrt(inp)
        b = rng.standard_normal((out, RANK)) * 0.25 / np.sqrt(out)
        final[n] = (a0, da, b)
    total = 100 * checkpoints
    for c in range(1, checkpoints + 1):
        step, frac = 100 * c, c / checkpoints
        folder = os.path.join(d, "run", f"checkpoint-{step}")
        os.makedirs(folder, exist_ok=True)
        t = {}
        for n, (a0, da, b) in final.items():
            a = (a0 + 0.3 * frac * da).astype(np.float32)
            t[f"base_model.model.{n}.lora_A.weight"] = ("F32", a.shape, a.tobytes())
            bb = (frac * b).astype(np.float32)
            t[f"base_model.model.{n}.lora_B.weight"] = ("F32", bb.shape, bb.tobytes())
        write_safetensors(os.path.join(folder, "adapter_model.safetensors"), t)
        with open(os.path.join(folder, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA,
                       "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                          "up_proj", "down_proj"]}, f)
    return names, total


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        chunk = raw[8 + n + b:8 + n + e]
        out[name] = bf16_values(chunk, t["shape"]) if t["dtype"] == "BF16" else \
            np.frombuffer(chunk, dtype=np.float32).reshape(t["shape"])
    return out


def authors(d, names, ckpts, threads):
    """The paper's procedure per checkpoint and matrix; returns seconds and maxcos."""
    import torch
    torch.set_num_threads(threads)
    base = read_safetensors(os.path.join(d, "base.safetensors"))
    adapters = [read_safetensors(os.path.join(c, "adapter_model.safetensors")) for c in ckpts]
    scale = ALPHA / RANK
    maxcos = {}
    start = time.perf_counter()
    for i, ad in enumerate(adapters):
        for n in names:
            w0 = torch.from_numpy(np.array(base[n + ".weight"])).float()
            a = torch.from_numpy(np.array(ad[f"base_model.model.{n}.lora_A.weight"]))
            b = torch.from_numpy(np.array(ad[f"base_model.model.{n}.lora_B.weight"]))
            w = w0 + scale * (b @ a)
            u0 = torch.linalg.svd(w0, full_matrices=False)[0]
            u = torch.linalg.svd(w, full_matrices=False)[0]
            maxcos[(i, n)] = torch.abs(u[:, :K].T @ u0).max(dim=1).values.numpy()
    return time.perf_counter() - start, maxcos


def run_indim(indim, d, ckpts, threads):
    out = os.path.join(d, "indim-out")
    cmd = [indim, "analyze", os.path.join(d, "base.safetensors"), *ckpts, "--out", out,
           "--backend", "cpu", "--workers", str(threads), "--no-cache", "--k", str(K), "-q"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    report = json.load(open(os.path.join(out, "report.json")))
    maxcos = {(m["tuned_index"], m["name"][:-len(".weight")]): np.array(m["maxcos"], dtype=float)
              for m in report["matrices"]}
    routes = sorted({m["route"].split(",")[0] for m in report["matrices"]})
    return seconds, maxcos, report, routes


def compare(ours, theirs):
    """Counts equal at every eps but where a value lies within 1e-4 of eps; worst |diff|."""
    mismatches, worst = 0, 0.0
    for key, ref in theirs.items():
        got = ours[key]
        worst = max(worst, float(np.abs(got - ref).max()))
        for e in EPS:
            near = np.abs(ref - e) < 1e-4
            if int((got[~near] < e).sum()) != int((ref[~near] < e).sum()):
                mismatches += 1
    return mismatches, worst


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--indim", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--checkpoints", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--skip-authors", action="store_true")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    t0 = time.perf_counter()
    names, _ = generate(a.dir, a.layers, a.checkpoints)
    gen = time.perf_counter() - t0
    ckpts = sorted(glob.glob(os.path.join(a.dir, "run", "checkpoint-*")),
                   key=lambda s: int(re.search(r"(\d+)$", s).group(1)))
    indim_s, ours, report, routes = run_indim(a.indim, a.dir, ckpts, a.threads)
    row = {"layers": a.layers, "matrices": len(names), "checkpoints": len(ckpts),
           "threads": a.threads, "generate_s": round(gen, 1), "indim_s": round(indim_s, 2),
           "indim_routes": routes, "steps_from": report.get("steps_from"),
           "intruders_eps_0.5": [t["intruders"]["0.5"] for t in report["tuned"]]}
    if not a.skip_authors:
        authors_s, theirs = authors(a.dir, names, ckpts, a.threads)
        mismatches, worst = compare(ours, theirs)
        row.update({"authors_s": round(authors_s, 2), "ratio": round(authors_s / indim_s, 2),
                    "count_mismatches": mismatches, "max_abs_maxcos_diff": worst})
    print(json.dumps(row))
    return 0 if row.get("count_mismatches", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
