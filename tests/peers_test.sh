#!/usr/bin/env bash
# indim's CPU backend against an independent numpy/scipy implementation of the paper's
# procedure (bench/peers/peers.py, runs b and c) on the demo's checkpoints, merged and as a
# PEFT adapter: the intruder counts must agree matrix by matrix.
#   peers_test.sh PYTHON INDIM
set -euo pipefail
python=$1 indim=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$indim" demo --out "$work/demo" --hidden 96 --intermediate 256 --kv-dim 48 --layers 2 --no-cache \
  > /dev/null
peers="$(dirname "$0")/../bench/peers/peers.py"
for tuned in full lora; do
  "$python" "$peers" --indim "$indim" --base "$work/demo/base" --tuned "$work/demo/$tuned" --runs bc
done
