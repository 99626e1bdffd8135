#!/usr/bin/env bash
# Runs an indim analysis as a Slurm job array of N shards (one GPU each) and a merge job that
# starts when every shard has succeeded (afterok); prints both job ids.
#   deploy/slurm/submit.sh --shards N --out DIR [--partition P] [--account A] [--time T]
#                          [--gres G] [--html] BASE TUNED... [-- analyze options]
# DIR must be on a filesystem every node sees: shards write DIR/shards/I, logs go to DIR/logs,
# the merged report to DIR. Defaults from the environment: INDIM (the indim binary; `indim` on
# PATH), INDIM_PARTITION, INDIM_ACCOUNT, INDIM_TIME, INDIM_GRES (gpu:1; "none" asks for no GPU).
# Exit codes: 0 submitted, 1 usage error, 3 sbatch failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  echo "usage: $0 --shards N --out DIR [--partition P] [--account A] [--time T] [--gres G]" \
       "[--html] BASE TUNED... [-- analyze options]" >&2
  [ -n "${1:-}" ] && echo "submit.sh: $1" >&2
  exit 1
}

shards="" out="" html=()
partition=${INDIM_PARTITION:-} account=${INDIM_ACCOUNT:-} time_limit=${INDIM_TIME:-}
gres=${INDIM_GRES:-gpu:1}
inputs=() options=()
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=${2:-}; shift 2 || usage "--shards needs a value" ;;
    --out) out=${2:-}; shift 2 || usage "--out needs a value" ;;
    --partition) partition=${2:-}; shift 2 || usage "--partition needs a value" ;;
    --account) account=${2:-}; shift 2 || usage "--account needs a value" ;;
    --time) time_limit=${2:-}; shift 2 || usage "--time needs a value" ;;
    --gres) gres=${2:-}; shift 2 || usage "--gres needs a value" ;;
    --html) html=(--html); shift ;;
    -h|--help) usage ;;
    --) shift; options=("$@"); break ;;
    -*) usage "unknown option $1 (analyze options go after --)" ;;
    *) inputs+=("$1"); shift ;;
  esac
done
[[ "$shards" =~ ^[0-9]+$ ]] && [ "$shards" -ge 1 ] && [ "$shards" -le 4096 ] ||
  usage "--shards takes a number of shards from 1 to 4096"
[ -n "$out" ] || usage "--out must name the run's folder"
[ ${#inputs[@]} -ge 2 ] || usage "needs a base and at least one tuned checkpoint"
command -v sbatch >/dev/null || { echo "submit.sh: sbatch not found: is Slurm installed here?" >&2; exit 3; }

mkdir -p "$out/logs" "$out/shards"
out=$(cd "$out" && pwd)
common=(--parsable)
[ -n "$partition" ] && common+=(--partition "$partition")
[ -n "$account" ] && common+=(--account "$account")
[ -n "$time_limit" ] && common+=(--time "$time_limit")
gpu=()
[ "$gres" != "none" ] && gpu=(--gres "$gres")
indim=${INDIM:-indim}

array=$(INDIM="$indim" INDIM_OUT="$out" INDIM_SHARDS="$shards" \
  sbatch "${common[@]}" "${gpu[@]}" --array "0-$((shards - 1))" --job-name indim-shard \
  --export ALL --output "$out/logs/shard-%a.out" "$here/indim.sbatch" "${inputs[@]}" \
  "${options[@]}") || { echo "submit.sh: sbatch refused the shard array" >&2; exit 3; }
array=${array%%;*}
shard_dirs=()
for ((i = 0; i < shards; i++)); do shard_dirs+=("$out/shards/$i"); done
merge_cmd=$(printf '%q ' "$indim" merge "${shard_dirs[@]}" --out "$out" "${html[@]}" --quiet)
merge=$(sbatch "${common[@]}" --dependency "afterok:$array" --job-name indim-merge \
  --output "$out/logs/merge.out" --wrap "$merge_cmd") ||
  { echo "submit.sh: sbatch refused the merge job (shards are job $array)" >&2; exit 3; }
merge=${merge%%;*}
echo "shards $array"
echo "merge $merge"
echo "submit.sh: $shards shards in job array $array, merge job $merge; the report lands in" \
     "$out/report.json (squeue -j $array,$merge)" >&2
