"""Image classification: a CIFAR-style ResNet on an in-memory data set, behind the Task contract."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from warmup_lab.data import Batches, ImageData, load_image_data
from warmup_lab.errors import require
from warmup_lab.models import build_image_model, count_params
from warmup_lab.tasks.base import Task


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy; the model stays in whatever mode the trainer set (train mode)."""
    x, y = batch
    return F.cross_entropy(model(x), y)


def make_evaluate(data: ImageData, n_eval: int, batch_size: int):
    """Top-1 accuracy and mean loss on the first n_eval held-out samples (always the same ones)."""

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            total_loss = torch.zeros((), device=data.x_test.device)
            correct = torch.zeros((), device=data.x_test.device, dtype=torch.int64)
            for start in range(0, n_eval, batch_size):
                x = data.x_test[start:min(start + batch_size, n_eval)]
                y = data.y_test[start:min(start + batch_size, n_eval)]
                logits = model(x)
                total_loss += F.cross_entropy(logits.float(), y, reduction="sum")
                correct += (logits.argmax(dim=1) == y).sum()
        finally:
            model.train(was_training)
        return {"eval_loss": total_loss.item() / n_eval, "eval_acc": correct.item() / n_eval}

    return evaluate


def build_image_task(cfg: DictConfig, device: torch.device) -> Task:
    """cfg.model (resnet) + cfg.data (cifar10 | digits | shapes) -> Task; model init seeded by cfg.seed."""
    seed, dcfg = int(cfg.seed), cfg.data
    batch_size = int(cfg.train.batch_size)
    data = load_image_data(dcfg, device)
    channels, height, width = data.shape
    with torch.random.fork_rng(devices=[]):  # seed the init without moving the caller's RNG
        torch.manual_seed(seed)
        model = build_image_model(cfg.model, channels, data.num_classes)
    model = model.to(device)

    pad = dcfg.get("pad")
    pad = height // 8 if pad is None else int(pad)
    batches = Batches(data.x_train, data.y_train, batch_size, seed, augment=bool(dcfg.get("augment", True)),
                      pad=pad, flip=bool(dcfg.get("flip", True)))

    eval_bs = int(dcfg.get("eval_batch_size", 512))
    eval_batches = cfg.train.get("eval_batches")
    n_test = len(data.x_test)
    require(eval_batches is None or int(eval_batches) >= 1, "train.eval_batches", eval_batches, "null or >= 1")
    n_eval = n_test if eval_batches is None else min(n_test, int(eval_batches) * eval_bs)

    info = {"dataset": data.name, "n_train": len(data.x_train), "n_test": n_test, "n_eval": n_eval,
            "image_size": [height, width], "channels": channels, "num_classes": data.num_classes,
            "n_params": count_params(model), "steps_per_epoch": batches.steps_per_epoch,
            "augment": batches.augment, "pad": pad, "flip": batches.flip,
            **{k: v for k, v in data.info.items() if k in ("source", "root")}}
    return Task(name=str(cfg.task.name), kind="image", model=model, batch=batches, loss=_loss,
                evaluate=make_evaluate(data, n_eval, eval_bs), batch_size=batch_size,
                chance_acc=1.0 / data.num_classes, info=info)
