"""flow_matching's module `flow_matching.path.scheduler.schedule_transform`, for imports that name it: ScheduleTransformedModel."""
from . import ScheduleTransformedModel

__all__ = ["ScheduleTransformedModel"]


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from .scheduler import Scheduler  # noqa: E402,F401
from ...utils.model_wrapper import ModelWrapper  # noqa: E402,F401
