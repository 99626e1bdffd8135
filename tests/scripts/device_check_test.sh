#!/usr/bin/env bash
# The device check refuses to pass on a GPU machine where the GPU tests could only skip:
# scripts/device-check.sh against a fake nvidia-smi (a driver older than R580 is refused before
# any step; R580 gets past that check), and the GPU tests with INDIM_REQUIRE_GPU=1 failing,
# not skipping, where there is no device (this machine).
#   device_check_test.sh REPO_ROOT GPU_TEST_BINARY
set -uo pipefail
root=$1
gpu_tests=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

mkdir -p "$work/bin" "$work/run"
cat > "$work/bin/nvidia-smi" <<'SMI'
#!/bin/sh
case "$*" in
  -L) echo "GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)" ;;
  *driver_version*) echo "$FAKE_DRIVER" ;;
  *) echo "fake nvidia-smi" ;;
esac
SMI
chmod +x "$work/bin/nvidia-smi"

check() {  # check DRIVER: runs the device check in an empty folder; its exit status and summary
  (cd "$work/run" && FAKE_DRIVER=$1 PATH="$work/bin:$PATH" OUT="$work/out-$1" \
    timeout 60 bash "$root/scripts/device-check.sh") > "$work/log-$1" 2>&1
}

check 570.86.15
rc=$?
[ "$rc" -eq 2 ] || fail "driver 570: exit $rc, expected 2: $(cat "$work/log-570.86.15")"
grep -q "driver 570.86.15 is older than R580" "$work/out-570.86.15/summary.txt" ||
  fail "driver 570: the summary does not name the driver: $(cat "$work/out-570.86.15/summary.txt")"

check 580.65.06
rc=$?
[ "$rc" -eq 2 ] || fail "driver 580: exit $rc, expected 2 (no bundle here)"
grep -q "no .device/indim-bundle.tar.gz" "$work/out-580.65.06/summary.txt" ||
  fail "driver 580 was refused: $(cat "$work/out-580.65.06/summary.txt")"
echo "ok: the driver is checked before any step"

filter='CudaGram64.TopKByIterationMatchesTheCpu'
"$gpu_tests" --gtest_filter="$filter" > "$work/plain" 2>&1
rc=$?
if grep -q "^\[  PASSED  \] 1 test" "$work/plain" && ! grep -q SKIPPED "$work/plain"; then
  echo "ok: a CUDA device is present, so nothing here can skip (INDIM_REQUIRE_GPU not tried)"
  exit 0
fi
[ "$rc" -eq 0 ] && grep -q "SKIPPED" "$work/plain" || fail "without a device the test should skip: $(cat "$work/plain")"
INDIM_REQUIRE_GPU=1 "$gpu_tests" --gtest_filter="$filter" > "$work/required" 2>&1
rc=$?
[ "$rc" -ne 0 ] || fail "INDIM_REQUIRE_GPU=1 without a device passed: $(cat "$work/required")"
grep -q "INDIM_REQUIRE_GPU=1 but no usable CUDA device" "$work/required" ||
  fail "the failure does not say why: $(cat "$work/required")"
echo "ok: with INDIM_REQUIRE_GPU=1 a test that finds no device fails"
