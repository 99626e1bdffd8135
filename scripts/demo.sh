#!/usr/bin/env bash
# Set up, build, and run `indim demo` on generated checkpoints (written to ./indim-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
"${INDIM_BUILD_DIR:-build}/indim" demo --out indim-demo "$@"
