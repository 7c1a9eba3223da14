import os
import sys

import pytest
import torch

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
