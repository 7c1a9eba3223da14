import os
import sys

# Triton's helpers run under the interpreter only if it is set before triton is first
# imported; without a GPU (or unless FASTFLOW_TEST_GPU=1) the Triton tests use it.
if os.environ.get("FASTFLOW_TEST_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def chi2_pvalue(counts, probs):
    """Pearson chi-square p-value of observed counts against probabilities (zero-prob bins must be empty)."""
    from scipy.stats import chisquare
    counts = torch.as_tensor(counts, dtype=torch.float64)
    probs = torch.as_tensor(probs, dtype=torch.float64)
    assert counts[probs == 0].sum() == 0, "a zero-probability outcome was drawn"
    keep = probs > 0
    exp = probs[keep] / probs[keep].sum() * counts.sum()
    return float(chisquare(counts[keep].numpy(), exp.numpy()).pvalue)
