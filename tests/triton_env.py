"""Shared set-up of the Triton test modules: which device they run on, and a module-level
skip (with the reason) when Triton cannot run here.

On CPU the kernels run under the Triton interpreter (conftest.py sets TRITON_INTERPRET=1
before Triton is first imported); FASTFLOW_TEST_GPU=1 runs compiled kernels on CUDA tensors.
"""
import os

import pytest

GPU = os.environ.get("FASTFLOW_TEST_GPU") == "1"
DEVICE = "cuda" if GPU else "cpu"


def _interpreter_not_ready():
    """Triton's own jit helpers (tl.max, tl.interleave, ...) are interpreted only when
    TRITON_INTERPRET=1 was set before Triton was first imported in this process."""
    if GPU:
        return None
    import triton.language.standard as std
    from triton.runtime.interpreter import InterpretedFunction

    if isinstance(std.interleave, InterpretedFunction):
        return None
    return ("Triton was imported before TRITON_INTERPRET=1 was set; set it at the top of "
            "tests/conftest.py (or in the environment) to run the Triton tests on CPU")


def require_triton():
    """Skip the calling test module unless the Triton backend can run on DEVICE."""
    pytest.importorskip("triton")
    import fastflow.triton_kernels as tk

    why = tk.unavailable(DEVICE) or _interpreter_not_ready()
    if why is not None:
        pytest.skip(why, allow_module_level=True)
