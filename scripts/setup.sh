#!/usr/bin/env bash
# Prepare a Python environment for fastflow, idempotently:
#   - a virtual environment in .venv that sees the system's packages, so an installed torch is kept;
#   - torch only if none is importable: pinned 2.13.0 on machines without an NVIDIA GPU, from
#     TORCH_INDEX_URL when set (https://download.pytorch.org/whl/cpu gives the CPU build on a
#     stock machine, where PyPI's default wheel bundles CUDA; this project's machines serve the
#     CPU wheel from their pip configuration);
#   - triton, the build tools, the test and benchmark extras, and fastflow itself in editable mode
#     (which compiles the csrc CPU backend, the CUDA one where nvcc and a CUDA torch are found, and
#     the tests' CUDA emulator module).
set -euo pipefail
cd "$(dirname "$0")/.."
# .ci/run prepares the environment once and sets FASTFLOW_SETUP_DONE=1 for the scripts it calls
# (each would otherwise spend ~12 s re-checking it, and two at once would race in pip)
if [ "${FASTFLOW_SETUP_DONE:-}" = 1 ] && [ -x .venv/bin/python ]; then exit 0; fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv --system-site-packages .venv
fi
. .venv/bin/activate
pip() { python -m pip --disable-pip-version-check -q "$@"; }
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then pip install torch
  else pip install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}; fi
fi
python -c "import triton" 2>/dev/null || pip install "triton==3.9.0" || echo "warning: triton not installed; the triton backend will be unavailable" >&2
# (cmake from PyPI where the system has none: the editable install below skips pyproject's
# build requirements, and without cmake it would build no backend)
command -v cmake >/dev/null 2>&1 || pip install "cmake>=3.18" || echo "warning: cmake not installed; the compiled backends will not build" >&2
pip install setuptools wheel pybind11 ninja numpy pytest scipy tqdm matplotlib nvtx torchdiffeq "flow-matching==1.0.10"
# the tests run the CUDA kernels on the CPU through an emulator where no GPU is (tests/cuda_emulator.py)
FASTFLOW_CUDA_EMULATOR=${FASTFLOW_CUDA_EMULATOR:-1} pip install --no-build-isolation --no-deps -e .
python -c "import fastflow as ff; print('fastflow backends:', ff.available_backends())"
