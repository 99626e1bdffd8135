#!/usr/bin/env bash
# docs/service-api.yaml through a standard OpenAPI linter, @redocly/cli (scripts/setup.sh
# installs the pinned version into .tools/redocly), with every rule of the recommended set an
# error (docs/redocly.yaml). Nothing is skipped: without the linter the test fails.
#   openapi_lint.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
redocly="$root/.tools/redocly/node_modules/.bin/redocly"
[ -x "$redocly" ] || { echo "FAIL: $redocly is missing: run scripts/setup.sh"; exit 1; }
# No telemetry and no update check: the linter reads the document and nothing else.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
exec "$redocly" lint --config "$root/docs/redocly.yaml" "$root/docs/service-api.yaml"
