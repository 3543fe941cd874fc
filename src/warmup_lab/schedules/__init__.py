"""LR schedules: any warmup shape composed with any decay, as a pure function of the step.

    sched = build_schedule(cfg.schedule, total_steps=T, target_lr=lr, betas=(0.9, 0.999) or None)
    sched(t)                         # LR of update t (0-based)
    ctl = LRController(optimizer, sched); ctl.apply(t)

Reference: docs/schedules.md.
"""

from warmup_lab.schedules.compose import DEFAULTS, Schedule, build_schedule
from warmup_lab.schedules.controller import LRController, as_torch_scheduler
from warmup_lab.schedules.decays import DECAYS
from warmup_lab.schedules.warmups import WARMUPS

__all__ = ["build_schedule", "Schedule", "LRController", "as_torch_scheduler", "WARMUPS", "DECAYS", "DEFAULTS"]
