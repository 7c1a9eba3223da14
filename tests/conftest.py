import os
import sys

# Triton's helpers run under the interpreter only if it is set before triton is first
# imported; without a GPU (or unless FASTFLOW_TEST_GPU=1) the Triton tests use it.
if os.environ.get("FASTFLOW_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

# scripts/sanitize.sh: another build of fastflow._C (under AddressSanitizer) stands in for the
# installed one; it must be in sys.modules before fastflow is first imported.
if os.environ.get("FASTFLOW_C_MODULE"):
    import importlib.util

    _spec = importlib.util.spec_from_file_location("fastflow._C", os.environ["FASTFLOW_C_MODULE"])
    sys.modules["fastflow._C"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["fastflow._C"])

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_configure(config):
    # a warning raised in fastflow's code (NumPy's overflow in a cast, say, which hid a wrong
    # comparison) fails the test: users run with -W error too. (Not every RuntimeWarning: the
    # GPU machine's torch / Triton versions may warn of their own, and its run is rare.)
    config.addinivalue_line("filterwarnings", "error:::fastflow")
    # torch's first forward-AD call (torch.func.jvp) registers decompositions with torch.jit.script,
    # which warns in this torch: not ours to fix
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def time_mlp(g: torch.Generator, width: int = 16):
    """A small 2-D velocity model ``model(x, t, scale=1)`` (an MLP of x and t, its weights drawn
    from ``g``) and its network, for tests that compare solvers and wrappers with flow_matching."""
    net = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Tanh(), torch.nn.Linear(width, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def model(x, t, **extras):
        return net(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], 1)) * extras.get("scale", 1.0)

    return net, model


def chi2_pvalue(counts, probs):
    """Pearson chi-square p-value of observed counts against probabilities (zero-prob bins must be empty)."""
    from scipy.stats import chisquare
    counts = torch.as_tensor(counts, dtype=torch.float64)
    probs = torch.as_tensor(probs, dtype=torch.float64)
    assert counts[probs == 0].sum() == 0, "a zero-probability outcome was drawn"
    keep = probs > 0
    exp = probs[keep] / probs[keep].sum() * counts.sum()
    return float(chisquare(counts[keep].numpy(), exp.numpy()).pvalue)
