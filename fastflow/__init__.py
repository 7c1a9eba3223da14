"""fastflow: fused kernels for the hot loops of flow-matching models."""
import os as _os

# In a source tree the Triton kernels live in ../triton_kernels; an installed wheel maps them
# to fastflow/triton_kernels (setup.py package_dir). Either way: ``fastflow.triton_kernels``.
_tree = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "triton_kernels")
if _os.path.isdir(_tree):
    __path__.append(_os.path.dirname(_tree))  # type: ignore[name-defined]  # noqa: F821
