#!/usr/bin/env bash
# deploy/slurm/submit.sh on a real single-node Slurm cluster started here: a job array of shards
# (each with --gres=gpu:1 on fake GPUs) and the merge job after it; the merged report must equal
# an unsharded run's. Then the same cluster without GPUs: --gres none must run there. Skips (77)
# where Slurm or munge is not installed or we are not root.
#   slurm_test.sh PYTHON INDIM
set -euo pipefail
python=$1 indim=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
for tool in slurmctld slurmd sbatch munged runuser mknod; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/setup.sh installs Slurm)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: the private Slurm cluster runs its daemons as root"; exit 77; }

tmp=$(mktemp -d /tmp/indim-slurm-XXXXXX)
chmod 755 "$tmp"  # munged runs as the munge user and must reach its folder
cluster="$tmp/cluster"
cpu_cluster="$tmp/cpu-cluster"
cleanup() {
  "$root/tests/deploy/slurm_cluster.sh" stop "$cluster" || true
  "$root/tests/deploy/slurm_cluster.sh" stop "$cpu_cluster" || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export SLURM_CONF
SLURM_CONF=$("$root/tests/deploy/slurm_cluster.sh" start "$cluster")

"$indim" demo --out "$tmp/demo" --hidden 64 --intermediate 160 --kv-dim 32 --layers 3 \
  --backend cpu --no-cache >/dev/null
inputs=("$tmp/demo/base" "$tmp/demo/full" "$tmp/demo/lora-adapter")
analyze=(--backend cpu --no-cache --eps 0.5,0.3 --k 8)

# Usage errors first: no --shards, options before --.
if "$root/deploy/slurm/submit.sh" --out "$tmp/x" "${inputs[@]}" 2>/dev/null; then
  echo "FAIL: submit.sh without --shards succeeded"; exit 1
fi

ids=$(INDIM="$indim" "$root/deploy/slurm/submit.sh" --shards 3 --out "$tmp/run" --html \
  "${inputs[@]}" -- "${analyze[@]}")
array=$(awk '/^shards /{print $2}' <<<"$ids")
merge=$(awk '/^merge /{print $2}' <<<"$ids")
[ -n "$array" ] && [ -n "$merge" ] || { echo "FAIL: submit.sh printed no job ids: $ids"; exit 1; }
echo "submitted: shards job $array, merge job $merge"
for _ in $(seq 600); do
  [ -z "$(squeue -h -j "$array,$merge" 2>/dev/null)" ] && break
  sleep 0.5
done
[ -z "$(squeue -h -j "$array,$merge" 2>/dev/null)" ] || { echo "FAIL: jobs still queued after 300 s"; squeue; exit 1; }
for i in 0 1 2; do
  grep -q "indim shard $i/3 on .* (GPU [01])" "$tmp/run/logs/shard-$i.out" ||
    { echo "FAIL: shard $i did not run on a GPU slot:"; cat "$tmp/run/logs/shard-$i.out"; exit 1; }
done
[ -f "$tmp/run/report.json" ] || { echo "FAIL: no merged report:"; cat "$tmp/run/logs/"*; exit 1; }
[ -s "$tmp/run/report.html" ] || { echo "FAIL: no merged report.html"; exit 1; }

"$indim" analyze "${inputs[@]}" "${analyze[@]}" --out "$tmp/whole" --quiet >/dev/null
"$python" - "$tmp/run/report.json" "$tmp/whole/report.json" <<'PY'
import json, sys
def load(p):
    r = json.load(open(p))
    for key in ("created", "timing"):
        r.pop(key)
    for m in r["matrices"]:
        m.pop("seconds")
    return r
merged, whole = load(sys.argv[1]), load(sys.argv[2])
assert merged == whole, [k for k in whole if merged.get(k) != whole[k]]
timing = json.load(open(sys.argv[1]))["timing"]
assert [s["index"] for s in timing["shards"]] == [0, 1, 2], timing
assert len(whole["matrices"]) == sum(s["matrices"] for s in timing["shards"]), timing
print("merged report of", len(whole["matrices"]), "records equals the unsharded run's")
PY

# A cluster that knows no GPU: --gres none must ask for none (sbatch refuses any gres there).
wait_jobs() {  # job ids, comma-separated
  for _ in $(seq 600); do
    [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
    sleep 0.5
  done
  echo "FAIL: jobs $1 still queued after 300 s"; squeue; exit 1
}
"$root/tests/deploy/slurm_cluster.sh" stop "$cluster"
SLURM_CONF=$("$root/tests/deploy/slurm_cluster.sh" start "$cpu_cluster" --cpu-only)
ids=$(INDIM="$indim" "$root/deploy/slurm/submit.sh" --shards 2 --gres none --out "$tmp/cpu-run" \
  "${inputs[@]}" -- "${analyze[@]}") || { echo "FAIL: submit.sh --gres none on a CPU cluster"; exit 1; }
wait_jobs "$(awk '/^shards /{print $2}' <<<"$ids"),$(awk '/^merge /{print $2}' <<<"$ids")"
for i in 0 1; do
  grep -q "indim shard $i/2 on .* (GPU none)" "$tmp/cpu-run/logs/shard-$i.out" ||
    { echo "FAIL: shard $i of the CPU run:"; cat "$tmp/cpu-run/logs/shard-$i.out"; exit 1; }
done
[ -f "$tmp/cpu-run/report.json" ] || { echo "FAIL: no merged report of the CPU run"; exit 1; }
echo "PASS"
