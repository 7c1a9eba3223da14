"""The fastflow:: custom ops on the Triton backend: torch.library.opcheck (schema, fake tensors,
autograd registration, AOT dispatch), torch.compile of the public ops, and the backend's
availability rules.

Runs under the Triton interpreter on CPU (TRITON_INTERPRET=1, set before Triton is imported);
FASTFLOW_TEST_GPU=1 runs the compiled kernels on CUDA tensors instead.
"""
from triton_env import DEVICE, GPU, require_triton

require_triton()


import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")
import fastflow as ff  # noqa: E402
import fastflow.triton_kernels as tk  # noqa: E402
from fastflow import backends  # noqa: E402
from fastflow.ops import affine_path as ops_affine  # noqa: E402,F401  (registers the ops)
from fastflow.ops import discrete as ops_discrete  # noqa: E402,F401
from fastflow.ops import step_combine as ops_step  # noqa: E402,F401


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
OPS = torch.ops.fastflow
TB = "triton"


def rng():
    return torch.tensor([12345, 7], dtype=torch.int64, device=DEVICE)


def vec(n, lo=0.0, hi=1.0):
    return torch.rand(n, device=DEVICE) * (hi - lo) + lo


def _opcheck_cases():
    B, D = 3, 10
    x1 = torch.randn(B, D, device=DEVICE)
    x0 = torch.randn(B, D, device=DEVICE)
    v = torch.randn(B, D, device=DEVICE, requires_grad=True)
    mask = torch.rand(B, D, device=DEVICE) > 0.3
    N, V = 6, 13
    logits = torch.randn(N, V, device=DEVICE, requires_grad=True)
    tok = torch.randint(0, V, (N,), device=DEVICE)
    tok2 = torch.randint(0, V, (N,), device=DEVICE)
    return {
        "affine_path_sample": [(x1, None, vec(B), vec(B), vec(B), rng(), TB), (x1, x0, vec(B), vec(B), None, rng(), TB)],
        "affine_path_loss": [(v, x1, None, vec(B), vec(B), vec(B), rng(), mask, vec(B), True, TB),
                             (v.detach(), x1, x0, vec(B), vec(B), None, rng(), None, vec(B), False, TB)],
        "step_combine": [(x1, x0, None, vec(B), vec(B), None, vec(B), rng(), None, TB),
                         (x1, x0, x1, vec(B), vec(B), vec(B), None, None, None, TB)],
        "step_combine_out": [(x1, x0, None, vec(B), vec(B), None, None, None, None, torch.empty_like(x1), TB)],
        "mixture_path_sample": [(tok.view(2, 3), None, vec(2), rng(), None, V, -1, TB),
                                (tok.view(2, 3), tok2.view(2, 3), vec(2), None, torch.rand(2, 3, device=DEVICE), V, -1, TB)],
        "cross_entropy": [(logits, tok, -100, vec(N), True, TB), (logits.detach(), tok, -100, vec(N), False, TB)],
        "generalized_kl": [(logits, tok, tok2, vec(N), -100, vec(N), True, TB)],
        "scale_rows": [(torch.randn(N, V, device=DEVICE), vec(N, 0.5, 2.0), TB)],
        "jump_step": [(logits.detach(), tok, vec(N), vec(N, 0, 3), vec(N), None, 1, -1, 1.0, False, False, rng(),
                       None, None, None, TB),
                      (logits.detach(), tok, vec(N), vec(N, 0, 3), vec(N), None, 2, V - 1, 0.5, True, False, None,
                       torch.rand(N, 3, device=DEVICE), torch.rand(N, V, device=DEVICE), None, TB)],
    }


CASES = [(name, i) for name, cases in _opcheck_cases().items() for i in range(len(cases))]


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_opcheck(name, i):
    args = _opcheck_cases()[name][i]
    torch.library.opcheck(getattr(OPS, name).default, args)


def test_torch_compile_public_ops():
    """The public ops with backend='triton' are opaque custom ops: a fullgraph compile works."""
    torch._dynamo.reset()
    B, D, V = 2, 12, 9
    a, b = torch.full((B,), 0.3, device=DEVICE), torch.full((B,), 0.7, device=DEVICE)

    def step(x1, v, logits, tok, r):
        x_t = ff.affine_path_sample(x1, None, a, b, None, r, backend=TB)
        loss = ff.affine_path_loss(v, x1, None, b, a, None, r, backend=TB)
        x_next = ff.step_combine(x_t, v.detach(), 1.0, 0.1, backend=TB)  # not differentiable
        ce = ff.mixture_cross_entropy(logits, tok, backend=TB)
        return x_next, loss.sum() + ce

    x1 = torch.randn(B, D, device=DEVICE)
    v = torch.randn(B, D, device=DEVICE, requires_grad=True)
    logits = torch.randn(B, 3, V, device=DEVICE, requires_grad=True)
    tok = torch.randint(0, V, (B, 3), device=DEVICE)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = compiled(x1, v, logits, tok, rng())
    expect = step(x1, v.detach().clone().requires_grad_(), logits.detach().clone().requires_grad_(), tok, rng())
    torch.testing.assert_close(got[0], expect[0])
    torch.testing.assert_close(got[1], expect[1])
    got[1].backward()
    assert v.grad is not None and logits.grad is not None


def test_availability_rules():
    assert tk.unavailable("cuda" if GPU else "cpu") is None
    assert isinstance(tk.unavailable("mps"), str)
    assert "triton" in backends.available_backends(DEVICE)
    assert backends.resolve_name("jump_step", DEVICE, "triton") == "triton"
    for op in tk.OPS:
        assert callable(getattr(tk, op))
        assert backends.why_not("triton", op, DEVICE) is None


def test_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "TRITON_INTERPRET" in tk.unavailable("cpu")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        backends.resolve_name("step_combine", "cpu", "triton")


def test_overwrite_logits():
    # the Triton row kernels finish a row's statistics before writing its first gradient element
    from test_discrete import check_overwrite_logits
    check_overwrite_logits(TB, DEVICE)
