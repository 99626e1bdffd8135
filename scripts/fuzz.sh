#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for N seconds
# (default 60) from the seed corpus in tests/fuzz/corpus. A crash found fails the run and leaves
# the input as build-fuzz/tests/fuzz/crash-*; add it to the corpus and a regression test.
#   scripts/fuzz.sh [SECONDS]        e.g. scripts/fuzz.sh 3600 for a long run
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build="${INDIM_FUZZ_BUILD_DIR:-build-fuzz}"
for tool in clang clang++; do
  command -v "$tool" >/dev/null || { echo "fuzz: $tool not found (apt-get install clang)"; exit 1; }
done
generator=()
command -v ninja >/dev/null && [ ! -f "$build/CMakeCache.txt" ] && generator=(-G Ninja)
CC=clang CXX=clang++ cmake -S . -B "$build" "${generator[@]}" -DINDIM_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --parallel "$(nproc)" >/dev/null
status=0
for target in safetensors shard_index adapter_config; do
  work="$build/tests/fuzz/corpus-$target"
  mkdir -p "$work"
  echo "fuzz: $target for ${seconds}s"
  if ! (cd "$build/tests/fuzz" && "./${target}_fuzzer" -max_total_time="$seconds" -timeout=10 -max_len=262144 \
        -rss_limit_mb=2048 -print_final_stats=1 "corpus-$target" \
        "$OLDPWD/tests/fuzz/corpus/$target" 2>&1 | tail -n 6); then
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "fuzz: no crashes" || echo "fuzz: CRASH found, see $build/tests/fuzz/crash-*"
exit "$status"
