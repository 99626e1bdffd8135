#!/usr/bin/env bash
# Set up, build, and run the whole test suite. GPU tests skip when no device is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd "${INDIM_BUILD_DIR:-build}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
ctest --output-on-failure --timeout 600 -j "$(nproc)" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the counts (skipped tests are the GPU ones on a machine without a GPU).
total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
failed=$(sed -n 's/.* \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -1)
skipped=$(grep -c '(Skipped)' "$log" || true)
if [ -n "$total" ]; then
  echo
  echo "ctest: $((total - ${failed:-0} - skipped)) passed, ${failed:-0} failed, $skipped skipped"
fi
exit "$status"
