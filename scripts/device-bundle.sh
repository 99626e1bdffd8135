#!/usr/bin/env bash
# Prepares, on the build machine, what a GPU machine needs to run scripts/device-check.sh:
# the built binaries and every shared library they use that a CUDA 13 image lacks (OpenBLAS,
# LAPACKE, gfortran, libstdc++), packed into .device/indim-bundle.tar.gz. CUDA's own libraries
# and glibc come from the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${INDIM_BUILD_DIR:-build}"
scripts/build.sh -DINDIM_CUDA=ON
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" .device
cp "$build/indim" "$build/tests/indim_tests" "$build/tests/indim_gpu_tests" \
  "$build/bench/indim_bench_syev" "$build/bench/indim_bench_lowrank" "$stage/bin/"
for bin in "$stage"/bin/*; do
  ldd "$bin" | awk '/=>/ {print $3}' | while read -r lib; do
    case "$lib" in
      /usr/local/cuda*|*/libc.so*|*/libm.so*|*/libdl.so*|*/libpthread.so*|*/librt.so*|*/ld-linux*) ;;
      *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
done
rm -f .device/indim-bundle.tar.xz  # gzip: every machine unpacks it without checking for xz
tar -C "$stage" -czf .device/indim-bundle.tar.gz bin lib
git rev-parse --short HEAD > .device/commit 2>/dev/null || true
ls -la .device
