"""flow_matching's module `flow_matching.path.scheduler.schedule_transform`, for imports that name it: ScheduleTransformedModel."""
from . import ScheduleTransformedModel

__all__ = ["ScheduleTransformedModel"]
