"""Public functional ops: validation, coefficients, torch.library custom ops and autograd."""
