"""flow_matching's module `flow_matching.utils.utils`, for imports that name it: expand_tensor_like, gradient, unsqueeze_to_match."""
from . import expand_tensor_like, gradient, unsqueeze_to_match

__all__ = ["expand_tensor_like", "gradient", "unsqueeze_to_match"]
