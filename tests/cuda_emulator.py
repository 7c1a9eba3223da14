"""The CUDA backend on CPU tensors, through the tests' CUDA emulator (``fastflow._C_cuda_emu``).

``load()`` returns a second instance of ``fastflow.csrc_backend`` whose kernels are
csrc/cuda's, compiled for the host (CMake option ``FASTFLOW_CUDA_EMULATOR``, which
scripts/setup.sh turns on) and run by csrc/cuda/emulator: every call takes the CUDA path of
the module (stream 0, the CUDA workspaces, the row split of a 4-SM device) on CPU tensors.
The instance has no ``*_floats`` entries: those are the CPU kernels' host-float paths.
``FASTFLOW_CUDA_EMULATOR_MODULE=/path/to/_C_cuda_emu....so`` loads another build of the module.
"""
import importlib.util
import os

import torch

import fastflow.csrc_backend as csrc_backend


def load():
    """The emulated backend module, or None when ``fastflow._C_cuda_emu`` is not built."""
    path = os.environ.get("FASTFLOW_CUDA_EMULATOR_MODULE")
    if path:  # another build of it (scripts/sanitize.sh: under AddressSanitizer)
        spec = importlib.util.spec_from_file_location("fastflow._C_cuda_emu", path)
        _C_cuda_emu = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_C_cuda_emu)
    else:
        try:
            from fastflow import _C_cuda_emu
        except ImportError:
            return None
    spec = importlib.util.spec_from_file_location("fastflow._csrc_backend_cuda_emulated", csrc_backend.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod._C = _C_cuda_emu

    def _run(fn, like, **kwargs):
        mod._raise_status(fn.__name__, fn(cuda=True, stream=0, **kwargs), like)

    def _raise_status(name, code, like):
        if code:
            why = _C_cuda_emu.cuda_last_error() if code == _C_cuda_emu.ERR_CUDA else ""
            raise RuntimeError(f"fastflow._C_cuda_emu.{name}: {_C_cuda_emu.status_message(code)} (status {code})"
                               + (f": {why}" if why else ""))

    def _row_workspace(rows, vocab, like):
        split = _C_cuda_emu.row_split(rows, vocab, 0)
        return torch.empty(4 * rows * split, dtype=torch.float32) if split > 1 else None

    def _loss_workspace(batch, per_sample, like):
        n = _C_cuda_emu.affine_path_loss_workspace(batch, per_sample)
        return torch.empty(n, dtype=torch.float32) if n else None

    mod._run, mod._raise_status = _run, _raise_status
    mod._row_workspace, mod._loss_workspace = _row_workspace, _loss_workspace
    for name in [n for n in vars(mod) if n.endswith("_floats")]:
        delattr(mod, name)
    return mod
