"""Tasks: a model plus its data, behind the Task contract (see base.py)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from warmup_lab.errors import ConfigError
from warmup_lab.tasks.base import Task

KINDS = ("image", "sequence", "lm")


def build_task(cfg: DictConfig, device: torch.device) -> Task:
    """Build the Task named by cfg.task (with cfg.model, cfg.data, cfg.seed, cfg.train.batch_size)."""
    kind = cfg.task.kind
    if kind == "image":
        from warmup_lab.tasks.image import build_image_task

        return build_image_task(cfg, device)
    if kind in ("sequence", "lm"):
        from warmup_lab.tasks.sequence import build_sequence_task

        return build_sequence_task(cfg, device)
    raise ConfigError("task.kind", kind, f"one of {', '.join(KINDS)}")


__all__ = ["Task", "build_task"]
