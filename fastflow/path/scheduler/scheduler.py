"""flow_matching's module `flow_matching.path.scheduler.scheduler`, for imports that name it: CondOTScheduler, ConvexScheduler, CosineScheduler, LinearVPScheduler,
           PolynomialConvexScheduler, Scheduler, SchedulerOutput, VPScheduler."""
from . import (CondOTScheduler, ConvexScheduler, CosineScheduler, LinearVPScheduler,
                PolynomialConvexScheduler, Scheduler, SchedulerOutput, VPScheduler)

__all__ = ["CondOTScheduler", "ConvexScheduler", "CosineScheduler", "LinearVPScheduler",
           "PolynomialConvexScheduler", "Scheduler", "SchedulerOutput", "VPScheduler"]
