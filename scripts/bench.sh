#!/usr/bin/env bash
# Print the microbenchmark table on whatever device is present (CPU by default).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m benchmarks "$@"
