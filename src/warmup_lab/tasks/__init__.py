"""Tasks: a model plus its data, behind the Task contract (see base.py); `task=custom` is a user's own
(warmup_lab.plugins)."""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig, open_dict

from warmup_lab.errors import ConfigError
from warmup_lab.tasks.base import Task

KINDS = ("image", "sequence", "lm", "custom")


def build_task(cfg: DictConfig, device: torch.device) -> Task:
    """Build the Task named by cfg.task (with cfg.model, cfg.data, cfg.seed, cfg.train.batch_size)."""
    from warmup_lab import plugins

    kind = cfg.task.kind
    if kind == "custom" or plugins.has_target(cfg.task):
        return plugins.build_task_plugin(cfg, device)
    if kind == "image":
        from warmup_lab.tasks.image import build_image_task as build
    elif kind in ("sequence", "lm"):
        from warmup_lab.tasks.sequence import build_sequence_task as build
    else:
        raise ConfigError("task.kind", kind, f"one of {', '.join(KINDS)}")
    task = build(cfg, device)
    if plugins.is_plugin_group(cfg.model):  # model=custom on built-in data: the output shape is the usual mistake
        plugins.check_task(task, plugins.MODEL_KEY, cfg.model.get(plugins.TARGET), device, logits=True)
    return task


def with_true_batch_size(cfg: DictConfig, task: Task) -> DictConfig:
    """cfg, or a copy whose train.batch_size is the task's when they differ (train.full_batch: the whole
    training set), so the summary's batch_size is the one the run used."""
    if int(cfg.train.batch_size) == task.batch_size:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.train.batch_size = task.batch_size
    return cfg


__all__ = ["Task", "build_task", "with_true_batch_size"]
