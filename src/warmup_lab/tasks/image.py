"""Image classification: a ResNet or an MLP on an in-memory data set, behind the Task contract.

`task.loss` is cross_entropy (default) or mse: MSE on one-hot targets scaled as Cohen et al. 2021,
0.5 x the mean over samples of the squared error summed over classes (the edge-of-stability and
catapult papers' loss). `train.full_batch=true` makes every step a gradient-descent step on the
whole training set (or its fixed `data.subset`), with no augmentation: exact, deterministic GD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from warmup_lab.data import Batches, FullBatch, ImageData, load_image_data
from warmup_lab.errors import ConfigError, require
from warmup_lab.models import build_image_model, count_params
from warmup_lab.tasks.base import Task, entropy


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def _half_squared_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """0.5 x sum over classes of (output - one-hot target)^2, per sample (Cohen et al. 2021)."""
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return 0.5 * (logits - target).pow(2).sum(dim=1)


PER_SAMPLE_LOSSES = {"cross_entropy": _cross_entropy, "mse": _half_squared_error}


def per_sample_loss(name: str):
    if name not in PER_SAMPLE_LOSSES:
        raise ConfigError("task.loss", name, f"one of {', '.join(PER_SAMPLE_LOSSES)}")
    return PER_SAMPLE_LOSSES[name]


def make_loss(name: str):
    """Mean of the per-sample loss over the batch; the model stays in the mode the trainer set."""
    per_sample = per_sample_loss(name)

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return per_sample(model(x), y).mean()

    return loss


def make_evaluate(data: ImageData, n_eval: int, batch_size: int, loss_name: str = "cross_entropy"):
    """Top-1 accuracy and mean loss (the training loss) on the first n_eval held-out samples."""
    per_sample = per_sample_loss(loss_name)

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
                total_loss += per_sample(logits, y).sum()
                correct += (logits.argmax(dim=1) == y).sum()
        finally:
            model.train(was_training)
        return {"eval_loss": total_loss.item() / n_eval, "eval_acc": correct.item() / n_eval}

    return evaluate


def build_image_task(cfg: DictConfig, device: torch.device) -> Task:
    """cfg.model (resnet | mlp) + cfg.data (cifar10 | digits | shapes) -> Task; model init seeded by cfg.seed."""
    seed, dcfg = int(cfg.seed), cfg.data
    loss_name = str(cfg.task.get("loss", "cross_entropy"))
    per_sample_loss(loss_name)  # a bad name fails here, before any data is loaded
    data = load_image_data(dcfg, device)
    channels, height, width = data.shape
    with torch.random.fork_rng(devices=[]):  # seed the init without moving the caller's RNG
        torch.manual_seed(seed)
        model = build_image_model(cfg.model, channels, data.num_classes, (height, width))
    model = model.to(device)

    pad = dcfg.get("pad")
    pad = height // 8 if pad is None else int(pad)
    if cfg.train.get("full_batch", False):
        batches = FullBatch(data.x_train, data.y_train)
    else:
        batches = Batches(data.x_train, data.y_train, int(cfg.train.batch_size), seed,
                          augment=bool(dcfg.get("augment", True)), pad=pad, flip=bool(dcfg.get("flip", True)))
    batch_size = batches.batch_size

    eval_bs = int(dcfg.get("eval_batch_size", 512))
    eval_batches = cfg.train.get("eval_batches")
    n_test = len(data.x_test)
    require(eval_batches is None or int(eval_batches) >= 1, "train.eval_batches", eval_batches, "null or >= 1")
    n_eval = n_test if eval_batches is None else min(n_test, int(eval_batches) * eval_bs)

    info = {"dataset": data.name, "n_train": len(data.x_train), "n_test": n_test, "n_eval": n_eval,
            "image_size": [height, width], "channels": channels, "num_classes": data.num_classes,
            "n_params": count_params(model), "steps_per_epoch": batches.steps_per_epoch,
            "augment": batches.augment, "pad": pad, "flip": batches.flip, "loss": loss_name,
            "full_batch": isinstance(batches, FullBatch),
            **{k: v for k, v in data.info.items()
               if k in ("source", "root", "subset", "normalise", "label_noise", "labels_changed")}}
    return Task(name=str(cfg.task.name), kind="image", model=model, batch=batches, loss=make_loss(loss_name),
                evaluate=make_evaluate(data, n_eval, eval_bs, loss_name), batch_size=batch_size,
                chance_acc=1.0 / data.num_classes, info=info,
                baseline_loss=entropy(data.y_train) if loss_name == "cross_entropy" else None)
