"""LR schedules: any warmup shape composed with any decay, as a pure function of the step.

    sched = build_schedule(cfg.schedule, total_steps=T, target_lr=lr, betas=(0.9, 0.999) or None)
    sched = schedule_from_cfg(cfg)   # the same, from a composed train or lr_curve config
    sched(t)                         # LR of update t (0-based)
    ctl = LRController(optimizer, sched); ctl.apply(t)

Reference: docs/schedules.md.
"""

from warmup_lab.schedules.build import DEFAULTS, build_schedule, schedule_from_cfg
from warmup_lab.schedules.compose import Schedule
from warmup_lab.schedules.controller import LRController, as_torch_scheduler
from warmup_lab.schedules.decays import DECAYS
from warmup_lab.schedules.warmups import WARMUPS

__all__ = ["build_schedule", "schedule_from_cfg", "Schedule", "LRController", "as_torch_scheduler", "WARMUPS", "DECAYS", "DEFAULTS"]
