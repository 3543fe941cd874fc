"""Apply a Schedule to an optimizer: each param group scaled from its own base LR (schedule pitfall 3, docs/definitions.md).

group lr at update t = sched(t) * base / sched.target_lr, base = the group's `initial_lr` (set at attach
from its `lr`, as torch schedulers do). So min_lr and init_lr are at the target's scale, and a group whose
base is 1/10 of the target gets 1/10 of every value, its floor included (group_floors() states them).
The only state is the release step of a loss-threshold constant warmup (He et al.).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from warmup_lab.schedules.compose import Schedule

if TYPE_CHECKING:  # torch is imported only when a torch scheduler is asked for
    import torch
    from torch.optim.lr_scheduler import LambdaLR


class LRController:
    """Sets every group's LR for update `step`; the trainer calls apply(step) before each update."""

    def __init__(self, optimizer: "torch.optim.Optimizer", sched: Schedule):
        self.optimizer, self.sched = optimizer, sched
        self.release_step: int | None = None
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.bases = [float(g["initial_lr"]) for g in optimizer.param_groups]

    def lr_at(self, step: int) -> float:
        """The schedule's value at `step`, with any observed loss-threshold release applied."""
        return self.sched.at(step, self.release_step)

    def apply(self, step: int) -> float:
        value = self.lr_at(step)
        scale = value / self.sched.target_lr
        for group, base in zip(self.optimizer.param_groups, self.bases):
            group["lr"] = base * scale
        return value

    def observe(self, step: int, loss: float) -> None:
        """Release a `hold_until_loss` constant warmup once the training loss first falls below it."""
        hold = self.sched.hold_until_loss
        if hold is None or self.release_step is not None:
            return
        if step + 1 < self.sched.warmup_steps and math.isfinite(loss) and loss < hold:
            self.release_step = int(step) + 1  # the next update runs at the post-warmup LR

    def group_floors(self) -> list[float]:
        """Each group's final LR (its floor): sched.final_lr * base / target."""
        return [self.sched.final_lr * base / self.sched.target_lr for base in self.bases]

    def state_dict(self) -> dict[str, Any]:
        return {"release_step": self.release_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.release_step = state.get("release_step")

    def describe(self) -> dict[str, Any]:
        return {**self.sched.describe(), "release_step": self.release_step, "group_base_lrs": list(self.bases),
                "group_floors": self.group_floors()}


def as_torch_scheduler(optimizer: "torch.optim.Optimizer", sched: Schedule, last_epoch: int = -1) -> "LambdaLR":
    """A stock LambdaLR with the same values (call .step() after each optimizer.step()).

    It cannot observe losses: a loss-threshold constant warmup holds until T_w here.
    """
    from torch.optim.lr_scheduler import LambdaLR

    target = sched.target_lr
    return LambdaLR(optimizer, lambda t: sched(t) / target, last_epoch=last_epoch)
