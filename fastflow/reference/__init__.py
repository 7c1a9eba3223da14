"""The reference backend: the PyTorch spec of every op, the CPU fallback and the test oracle.

Backend contract (triton_kernels/, csrc/ and this package implement the same functions with
the same signatures; ``fastflow/ops`` validates, builds coefficients and owns autograd):

- data tensors arrive in any layout; a backend that needs contiguous memory copies;
- per-sample coefficients are fp32 tensors ``[B]`` (continuous ops, sample ``b`` owns the
  elements ``b * D .. (b + 1) * D - 1`` of the flattened data, ``D = numel / B``) and per-row
  fp32 tensors ``[N]`` (discrete ops over ``[N, V]`` logits);
- ``rng`` is an int64 tensor ``(seed, offset)`` on the data's device, read by the kernels
  (no host sync); every op documents the counter values it consumes (FORMULAS.md §6);
- all arithmetic is fp32; outputs take the input dtype, losses are fp32. Float64 inputs (which
  the public ops send only here) are computed in float64 (``_common.compute_dtype``), their
  coefficients and losses float64 too, the noise the same fp32 stream widened.
"""
from .affine_path_sample import affine_path_sample
from .affine_path_loss import affine_path_loss
from .step_combine import step_combine
from .mixture_path_sample import mixture_path_sample
from .cross_entropy import cross_entropy
from .generalized_kl import generalized_kl
from .jump_step import jump_step

OPS = ("affine_path_sample", "affine_path_loss", "step_combine",
       "mixture_path_sample", "cross_entropy", "generalized_kl", "jump_step", "scale_rows")


def unavailable(device_type: str):
    return None  # plain PyTorch runs wherever torch does


def scale_rows(grad, g):
    """``grad[i, :] *= g[i]`` in place (the backward of the fused losses); rows with g == 1
    are left alone, so the common ``loss.backward()`` costs no pass over the gradient. The
    product is taken in fp32 and rounded once (an fp16 loss's g is 1 / numel, which fp16
    itself would hold only as a subnormal)."""
    if not bool((g == 1).all()):
        grad.copy_(grad.float() * g.float()[:, None])
