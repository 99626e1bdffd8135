#!/usr/bin/env bash
# The GPU check, run on a GPU machine from the repository root with .device/ carried from
# scripts/device-bundle.sh. Most informative steps first, 420 s in all: the GPU tests,
# CPU-versus-GPU agreement of `indim analyze`, the LoRA low-rank route's layer, the default
# algorithm on Llama-7B and -70B shapes, then the other algorithms, the torch peer, streams,
# the scaling curve and the batched eigensolver tried against Xsyevd.
#
# Only a few files come back from $OUT: summary.txt (printed last), logs.tar.gz (every log,
# XML and JSON) and env.txt. Exits 0 only when every step passed; 2 when the machine or the
# bundle is not fit to start (said within seconds).
#
# INDIM_REHEARSAL=1 runs it where there is no GPU, with the CPU backend and small shapes in
# place of the GPU steps: every step's mechanics, file names and summary, checked here.
set -uo pipefail
out="${OUT:-/tmp/indim-out}"
rehearsal="${INDIM_REHEARSAL:-0}"
budget=420  # seconds for every step together; a step is capped at what remains
py="${PYTHON:-python3}"
mkdir -p "$out"
work=$(mktemp -d /tmp/indim-check.XXXXXX)
logs="$work/logs"
mkdir -p "$logs"
summary=()
failed=0

finish() {  # the archive and the summary into $OUT; the summary printed last
  tar -C "$work" -czf "$out/logs.tar.gz" logs 2>/dev/null
  {
    echo "indim device check, commit $(cat .device/commit 2>/dev/null || echo '?')" \
      "$([ "$rehearsal" = 1 ] && echo '(REHEARSAL: CPU stand-ins, no GPU figure)')"
    for f in agree lowrank-layer bench-7b-gram64 bench-70b-gram64 bench-7b-others peers-7b \
      streams scaling syev-batched; do
      [ -s "$logs/$f.log" ] && { echo; echo "== $f"; tail -n 40 "$logs/$f.log"; }
    done
    echo
    echo "== gpu-tests"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?" "$logs/gpu-tests.log" 2>/dev/null
    grep -E "^\[  FAILED  \] [A-Za-z]" "$logs/gpu-tests.log" 2>/dev/null | head -20
    echo
    printf '%s\n' "${summary[@]}"
  } > "$out/summary.txt"
  cat "$out/summary.txt"
  exit "$1"
}

die() {  # before the first step: say why, leave the summary, exit 2
  summary+=("device-check: $*")
  echo "device-check: $*" >&2
  finish 2
}

# --- Guards: everything a long step assumes, checked first ---------------------------------
# A CUDA 13.0 build needs driver R580 or newer; on an older one the runtime sees no device, and
# every GPU test would skip.
min_driver=580
if [ "$rehearsal" != 1 ]; then
  command -v nvidia-smi > /dev/null || die "no nvidia-smi: this machine has no NVIDIA GPU"
  nvidia-smi -L 2>/dev/null | grep -q "^GPU " || die "nvidia-smi lists no GPU"
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 |
    tr -d ' ')
  [[ "$driver" =~ ^[0-9]+ ]] || die "nvidia-smi reports no driver version ('$driver')"
  [ "${driver%%.*}" -ge "$min_driver" ] ||
    die "driver $driver is older than R$min_driver, which the CUDA 13.0 build needs"
  # On a GPU machine a test that finds no device fails rather than skips.
  export INDIM_REQUIRE_GPU=1
fi
bundle=.device/indim-bundle.tar.gz
[ -f "$bundle" ] || die "no $bundle: run scripts/device-bundle.sh on the build machine and carry .device"
root="$work/bundle"
mkdir -p "$root"
tar -C "$root" -xzf "$bundle" || die "cannot unpack $bundle"

# CUDA's libraries: the toolkit's, the loader cache's, or those of the Python wheels.
cuda_dirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && cuda_dirs+=("$d")
done
while read -r lib; do cuda_dirs+=("$(dirname "$lib")"); done < <(ldconfig -p 2>/dev/null |
  awk '/libcusolver\.so|libcublas\.so|libcudart\.so/ {print $NF}')
while read -r d; do cuda_dirs+=("$d"); done < <("$py" -c "import glob, site
for s in site.getsitepackages():
    print('\n'.join(glob.glob(s + '/nvidia/*/lib')))" 2>/dev/null)
libpath="$root/lib$(printf ':%s\n' "${cuda_dirs[@]}" | awk 'length > 1 && !seen[$0]++' | tr -d '\n')"
# Wrappers: only indim's own binaries see the bundle's libraries (never the Python peers).
wbin="$work/bin"
mkdir -p "$wbin"
for b in indim indim_tests indim_gpu_tests indim_bench_syev indim_bench_lowrank; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$libpath" "$root/bin/$b" > "$wbin/$b"
  chmod +x "$wbin/$b"
done
{
  echo "commit: $(cat .device/commit 2>/dev/null)"; date -u
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  else
    echo "no nvidia-smi"
  fi
  nproc; "$py" --version 2>&1
  echo "library path: $libpath"
  for b in indim indim_tests indim_gpu_tests; do
    echo "== ldd $b"; LD_LIBRARY_PATH="$libpath" ldd "$root/bin/$b"
  done
} > "$out/env.txt" 2>&1
cp "$out/env.txt" "$logs/env.txt"
missing=$(grep "=> not found" "$out/env.txt" | sort -u)
[ -z "$missing" ] || die "libraries not found (see env.txt):
$missing"
echo "libraries used from: $(grep -oE '=> (/[^ ]*)/lib(cusolver|cublas|cudart)[^ ]*' "$out/env.txt" |
  sed 's|=> ||; s|/lib[^/]*$||' | sort -u | tr '\n' ' ')" >> "$logs/env.txt"

# --- Steps ------------------------------------------------------------------------------------
step() {  # step NAME SECONDS COMMAND...: capped at what remains of the budget; logs/NAME.log
  local name=$1 limit=$2
  shift 2
  local left=$((budget - SECONDS))
  if [ "$left" -lt 10 ]; then
    summary+=("$(printf '%-18s skipped (past the %ds budget)' "$name" "$budget")")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS rc=0
  timeout "$limit" "$@" > "$logs/$name.log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    summary+=("$(printf '%-18s ok      %4ds' "$name" $((SECONDS - t0)))")
  else
    failed=1
    local why="exit $rc"
    [ "$rc" -eq 124 ] && why="cut at its ${limit}s limit"
    summary+=("$(printf '%-18s FAILED  %4ds  (%s; logs/%s.log)' "$name" $((SECONDS - t0)) "$why" "$name")")
  fi
}

if [ "$rehearsal" = 1 ]; then
  dev=cpu
  demo_size=(--hidden 128 --intermediate 344 --kv-dim 64 --layers 2)
  shapes_7b=512x512,1376x512,512x1376
  shapes_70b=1024x1024,1024x256
  shapes_scaling=256x256,688x256,512x512
  layer_7b=(--hidden 512 --intermediate 1376 --kv-dim 512)
  others=cpu:gesdd
  lowrank_ranks=16
else
  dev=cuda
  demo_size=(--hidden 512 --intermediate 1376 --kv-dim 256 --layers 4)
  shapes_7b=4096x4096,11008x4096,4096x11008
  shapes_70b=8192x8192,28672x8192,1024x8192
  shapes_scaling=1024x1024,2752x1024,2048x2048,5504x2048,4096x4096,11008x4096,8192x8192,22016x8192,16384x16384
  layer_7b=(--hidden 4096 --intermediate 11008 --kv-dim 4096)
  others=cuda:gesvd,cuda:gesvdp,cuda:gesvdj,cpu:gram64
  lowrank_ranks=16,64
fi
export wbin work py dev

step gpu-tests 120 "$wbin/indim_gpu_tests" --gtest_output=xml:"$logs/gpu-tests.xml"
step demo 40 "$wbin/indim" demo --out "$work/demo" "${demo_size[@]}" --backend "$dev" --no-cache

agree() {  # CPU and $dev reports on the same checkpoints, base decomposed anew by each
  set -e
  local prec backend
  for prec in fp32 fp64; do
    for backend in cpu "$dev"; do
      "$wbin/indim" analyze "$work/demo/base" "$work/demo/full" "$work/demo/lora" \
        "$work/demo/lora-adapter" --backend "$backend" --precision "$prec" --no-cache \
        --out "$work/$backend-$prec" -q
    done
    "$py" scripts/compare-reports.py "$work/cpu-$prec/report.json" \
      "$work/$dev-$prec/report.json" "$prec"
  done
}
export -f agree
step agree 90 bash -c agree
# Issue 12's layer on this node: a LoRA adapter (r = 16, and 64 on a GPU) by the low-rank route against the
# same adapter merged and decomposed in full, both with the base cached.
step lowrank-layer 60 "$wbin/indim_bench_lowrank" --ranks "$lowrank_ranks" --backend "$dev" \
  --dir "$work/lowrank" --json "$logs/lowrank-layer.json"
step bench-7b-gram64 60 "$wbin/indim" bench --shapes "$shapes_7b" --runs "$dev:gram64" \
  --reference cpu --json "$logs/bench-7b-gram64.json"
step bench-70b-gram64 60 "$wbin/indim" bench --shapes "$shapes_70b" --runs "$dev:gram64" \
  --reference none --json "$logs/bench-70b-gram64.json"
step bench-7b-others 60 "$wbin/indim" bench --shapes "$shapes_7b" --runs "$others" \
  --reference none --json "$logs/bench-7b-others.json"

# The paper's torch procedure (a) against indim cold (d) and with the base cached (e) on one
# Llama-7B-shaped layer.
peers() {
  set -e
  "$wbin/indim" demo --out "$work/l7b" "${layer_7b[@]}" --layers 1 --backend "$dev" \
    --no-cache > /dev/null
  "$py" bench/peers/peers.py --indim "$wbin/indim" --base "$work/l7b/base" \
    --tuned "$work/l7b/lora" --runs ade --json "$logs/peers-7b.json"
}
export -f peers
layer_args="${layer_7b[*]}"
export layer_args
step peers-7b 60 bash -c 'layer_7b=($layer_args); peers'

streams() {  # the 7B layer's full fine-tune, cold, with 1, 2 and 4 matrices in flight
  set -e
  local n t0
  for n in 1 2 4; do
    t0=$(date +%s%N)
    "$wbin/indim" analyze "$work/l7b/base" "$work/l7b/full" --backend "$dev" --no-cache \
      --streams "$n" --workers "$n" --out "$work/streams-$n" -q > /dev/null
    echo "streams $n: $((($(date +%s%N) - t0) / 1000000)) ms wall"
  done
  for n in 2 4; do
    "$py" scripts/compare-reports.py "$work/streams-1/report.json" \
      "$work/streams-$n/report.json" fp32
  done
  "$py" -c "import collections, json, sys
r = json.load(open(sys.argv[1]))
print('tuned routes:', dict(collections.Counter(m['route'] for m in r['matrices'])))" \
    "$work/streams-1/report.json"
}
export -f streams
step streams 45 bash -c streams
step scaling 60 "$wbin/indim" bench --runs "$dev:gram64" --reference none \
  --shapes "$shapes_scaling" --json "$logs/scaling.json"
# The batched eigensolver tried: 4 Grams of order 4096 by Xsyevd one by one, on 4 streams, and
# by XsyevBatched (it prints "skipped" where there is no GPU).
step syev-batched 45 "$wbin/indim_bench_syev" --n 4096 --batch 4 --streams 4 \
  --json "$logs/syev-batched.json"

finish "$failed"
