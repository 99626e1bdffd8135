#!/usr/bin/env bash
# Set up, build, and run the whole test suite. GPU tests skip when no device is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd "${INDIM_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 600 -j "$(nproc)"
