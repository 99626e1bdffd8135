#!/usr/bin/env bash
# Runs on a GPU machine (CUDA 13 runtime libraries present) from the repository root, with
# .device/ carried from scripts/device-bundle.sh: the GPU tests, CPU-versus-GPU agreement of
# `indim analyze` on generated checkpoints, and `indim bench` on Llama-7B and -70B shapes.
# Logs go to $OUT (or /tmp/indim-out); a short table prints last. Budget: under 8 minutes.
set -uo pipefail
out="${OUT:-/tmp/indim-out}"
mkdir -p "$out"
root=/tmp/indim-dev
rm -rf "$root" && mkdir -p "$root"
tar -C "$root" -xJf .device/indim-bundle.tar.xz
cuda_lib=$(dirname "$(ldconfig -p | awk '/libcusolver.so.12 / {print $NF; exit}')" 2>/dev/null)
export LD_LIBRARY_PATH="$root/lib:${cuda_lib:-/usr/local/cuda/lib64}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
bin="$root/bin"
summary=()
budget=480  # seconds for all steps; later steps are skipped past it
step() {  # step NAME SECONDS COMMAND...: runs with a time limit, logs to $out/NAME.log
  local name=$1 limit=$2
  shift 2
  if [ "$SECONDS" -gt "$budget" ]; then
    summary+=("$(printf '%-14s skipped (past the %ds budget)' "$name" "$budget")")
    return
  fi
  [ "$limit" -gt $((budget + 60 - SECONDS)) ] && limit=$((budget + 60 - SECONDS))
  local t0=$SECONDS
  if timeout "$limit" "$@" > "$out/$name.log" 2>&1; then
    summary+=("$(printf '%-14s ok      %4ds' "$name" $((SECONDS - t0)))")
  else
    summary+=("$(printf '%-14s FAILED  %4ds  (see %s.log)' "$name" $((SECONDS - t0)) "$name")")
  fi
}

{
  echo "commit: $(cat .device/commit 2>/dev/null)"; date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  g++ --version | head -1; nvcc --version | tail -1; nproc
  ldd "$bin/indim"
} > "$out/env.log" 2>&1

step gpu-tests 150 "$bin/indim_gpu_tests" --gtest_output=xml:"$out/gpu-tests.xml"
step demo 90 "$bin/indim" demo --out "$root/demo" --hidden 512 --intermediate 1376 \
  --kv-dim 256 --layers 4 --backend cuda
agree() {  # CPU and CUDA reports on the same checkpoints: equal counts, maxcos within tolerance
  set -e
  local prec
  for prec in fp32 fp64; do
    for backend in cpu cuda; do
      "$bin/indim" analyze "$root/demo/base" "$root/demo/full" "$root/demo/lora" \
        "$root/demo/lora-adapter" --backend "$backend" --precision "$prec" \
        --out "$root/$backend-$prec" -q
    done
    python3 scripts/compare-reports.py "$root/cpu-$prec/report.json" \
      "$root/cuda-$prec/report.json" "$prec"
  done
}
export -f agree
export bin root
step agree 120 bash -c agree
step bench-7b 150 "$bin/indim" bench --shapes 4096x4096,11008x4096,4096x11008 \
  --runs cpu:gram64,cuda:gram64,cuda:gesvd,cuda:gesvdp,cuda:gesvdj --reference cuda \
  --json "$out/bench-7b.json"
# Peers on one Llama-7B-shaped layer: the paper's torch procedure (a) against indim cold (d)
# and with the base cached (e); numpy (b) is left to the bench's CPU row at these sizes.
step peers-7b 150 bash -c "'$bin/indim' demo --out '$root/l7b' --hidden 4096 --intermediate 11008 \
  --kv-dim 4096 --layers 1 --backend cuda --no-cache > /dev/null &&
  python3 bench/peers/peers.py --indim '$bin/indim' --base '$root/l7b/base' \
  --tuned '$root/l7b/lora' --runs ade --json '$out/peers-7b.json'"
streams() {  # the 7B layer's full fine-tune, cold, with 1, 2 and 4 matrices in flight
  set -e
  local n t0
  for n in 1 2 4; do
    t0=$(date +%s%N)
    "$bin/indim" analyze "$root/l7b/base" "$root/l7b/full" --backend cuda --no-cache \
      --streams "$n" --out "$root/streams-$n" -q > /dev/null
    echo "streams $n: $((($(date +%s%N) - t0) / 1000000)) ms wall"
  done
  for n in 2 4; do
    python3 scripts/compare-reports.py "$root/streams-1/report.json" \
      "$root/streams-$n/report.json" fp32
  done
  python3 -c "import collections, json, sys
r = json.load(open(sys.argv[1]))
print('tuned routes:', dict(collections.Counter(m['route'] for m in r['matrices'])))" \
    "$root/streams-1/report.json"
}
export -f streams
step streams 90 bash -c streams
step bench-70b 120 "$bin/indim" bench --shapes 8192x8192,28672x8192,1024x8192 \
  --runs cuda:gram64,cuda:gesvdp,cuda:gesvd --reference none --json "$out/bench-70b.json"
# The GPU half of the scaling curve (square and 2.7:1), gram64; rows print as they finish.
step scaling 100 "$bin/indim" bench --runs cuda:gram64 --reference none \
  --shapes 1024x1024,2752x1024,2048x2048,5504x2048,4096x4096,11008x4096,8192x8192,22016x8192,16384x16384 \
  --json "$out/scaling.json"

echo
cat "$out/agree.log" 2>/dev/null
echo
cat "$out/bench-7b.log" "$out/peers-7b.log" "$out/streams.log" "$out/bench-70b.log" \
  "$out/scaling.log" 2>/dev/null
echo
grep -E "tests|PASSED|FAILED" "$out/gpu-tests.log" | tail -3
printf '%s\n' "${summary[@]}"
