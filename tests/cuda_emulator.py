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

    def _run(fn, like, **kwargs):  # the CUDA path, on stream 0, without torch.cuda's device guard
        mod._raise_status(fn.__name__, fn(cuda=True, stream=0, **kwargs))

    mod._run, mod._cuda_path = _run, lambda t: True
    for name in [n for n in vars(mod) if n.endswith("_floats")]:
        delattr(mod, name)
    return mod
