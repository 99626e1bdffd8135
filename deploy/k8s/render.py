#!/usr/bin/env python3
"""Renders indim's Kubernetes manifests (this folder's templates) for one run or for the service.

  render.py shards --shards N --run NAME BASE TUNED... [-- analyze options] | kubectl apply -f -
      the volume claim, an Indexed Job of N shards (one GPU each) and the merge Job; the run's
      outputs land in DATA/runs/NAME (the merged report) and DATA/runs/NAME/shards/I.
  render.py serve --token-file FILE | kubectl apply -f -
      the volume claim, the token Secret, the indim-serve Deployment and its Service.

Paths (BASE, TUNED) are as the pods see them, under --data (default /data, the volume's mount).
Only the Python standard library is needed. Exit codes: 0 rendered, 1 usage error.
"""
import argparse
import json
import re
import string
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")  # a DNS label, short enough for Jobs
PLAIN = re.compile(r"^[A-Za-z0-9._:/@+-]+$")  # images, paths, sizes: nothing YAML must quote


def fail(message):
    print(f"render.py: {message}", file=sys.stderr)
    sys.exit(1)


def render(template, values):
    text = (HERE / template).read_text()
    return string.Template(text).substitute(values)


def common_values(args):
    for what, value in (("--image", args.image), ("--data", args.data), ("--storage", args.storage)):
        if not PLAIN.match(value):
            fail(f"{what} {value!r}: only letters, digits and ._:/@+- are allowed")
    if not NAME.match(args.namespace) or not NAME.match(args.claim):
        fail("--namespace and --claim must be DNS labels (lower case letters, digits, -)")
    if not args.data.startswith("/"):
        fail(f"--data {args.data!r} must be an absolute path (where the volume is mounted)")
    return {"NAMESPACE": args.namespace, "CLAIM": args.claim, "STORAGE": args.storage,
            "IMAGE": args.image, "DATA": args.data.rstrip("/") or "/"}


def shard_args(args, inputs, options, out):
    cmd = ["analyze", *inputs, *options]
    if "--cache" not in options and "--no-cache" not in options:
        cmd += ["--cache", f"{args.data}/cache"]  # shared by every shard (atomic renames)
    return cmd + ["--shard", f"$(SHARD)/{args.shards}", "--out", f"{out}/shards/$(SHARD)",
                  "--resume", "--quiet"]


def render_shards(args, rest):
    if not NAME.match(args.run):
        fail(f"--run {args.run!r} must be a DNS label of at most 40 characters (a-z, 0-9, -)")
    if not 1 <= args.shards <= 4096:
        fail("--shards takes 1 ... 4096")
    parallelism = args.parallelism or args.shards
    if not 1 <= parallelism <= args.shards:
        fail("--parallelism takes 1 ... --shards")
    inputs, options = (rest[: rest.index("--")], rest[rest.index("--") + 1 :]) if "--" in rest else (rest, [])
    if len(inputs) < 2:
        fail("needs a base and at least one tuned checkpoint")
    values = common_values(args)
    out = f"{values['DATA']}/runs/{args.run}"
    wait = (f'n=0; until [ "$n" -ge {args.shards} ]; do sleep 10; '
            f"n=$(ls {out}/shards/*/report.json 2>/dev/null | wc -l); done")
    merge = ["merge", *[f"{out}/shards/{i}" for i in range(args.shards)], "--out", out, "--quiet"]
    values.update({"RUN": args.run, "OUT": out, "SHARDS": args.shards, "PARALLELISM": parallelism,
                   "BACKOFF": args.backoff, "DEADLINE": args.deadline,
                   "SHARD_ARGS": json.dumps(shard_args(args, inputs, options, out)),
                   "MERGE_ARGS": json.dumps(merge + (["--html"] if args.html else [])),
                   "WAIT_SCRIPT": json.dumps(wait)})
    return [render(t, values) for t in ("pvc.yaml", "shards-job.yaml", "merge-job.yaml")]


def render_serve(args, rest):
    if rest:
        fail(f"serve takes no checkpoints: {' '.join(rest)}")
    try:
        token = Path(args.token_file).read_text().splitlines()[0].strip()
    except (OSError, IndexError) as e:
        fail(f"--token-file {args.token_file}: {e if isinstance(e, OSError) else 'empty'}")
    if len(token) < 16:
        fail("the token must be at least 16 characters (e.g. head -c 32 /dev/urandom | xxd -p -c 64)")
    values = common_values(args)
    values["TOKEN"] = json.dumps(token)
    return [render(t, values) for t in ("pvc.yaml", "serve.yaml")]


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("shards", "serve"):
        s = sub.add_parser(name)
        s.add_argument("--image", default="indim:latest", help="indim's image (docker/Dockerfile)")
        s.add_argument("--namespace", default="default")
        s.add_argument("--claim", default="indim-data", help="the PersistentVolumeClaim's name")
        s.add_argument("--storage", default="1Ti", help="the claim's size")
        s.add_argument("--data", default="/data", help="where pods mount the volume")
        if name == "shards":
            s.add_argument("--shards", type=int, required=True)
            s.add_argument("--run", required=True, help="the run's name: DATA/runs/NAME")
            s.add_argument("--parallelism", type=int, default=0, help="pods at a time (all)")
            s.add_argument("--backoff", type=int, default=6, help="failed pods before giving up")
            s.add_argument("--deadline", type=int, default=7 * 86400, help="merge Job, seconds")
            s.add_argument("--html", action="store_true", help="the merge also writes report.html")
        else:
            s.add_argument("--token-file", required=True)
    return p


def main():
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, rest = parser().parse_known_args(argv[:cut])
    rest += argv[cut:]
    unknown = [a for a in rest[: rest.index("--") if "--" in rest else len(rest)] if a.startswith("-")]
    if unknown:
        fail(f"unknown option {unknown[0]} (analyze options go after --)")
    docs = (render_shards if args.what == "shards" else render_serve)(args, rest)
    sys.stdout.write("---\n".join(docs))


if __name__ == "__main__":
    main()
