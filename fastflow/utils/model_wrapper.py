"""flow_matching's module `flow_matching.utils.model_wrapper`, for imports that name it: ModelWrapper."""
from . import ModelWrapper

__all__ = ["ModelWrapper"]
