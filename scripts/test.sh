#!/usr/bin/env bash
# Run fastflow's test suite. Triton kernels run under the interpreter when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export TRITON_INTERPRET=1
fi
exec python -m pytest -q "$@" tests
