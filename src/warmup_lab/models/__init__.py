"""Models built from `cfg.model`; the data decides input channels and classes."""

from __future__ import annotations

import math

from omegaconf import DictConfig
from torch import nn

from warmup_lab.errors import ConfigError, require
from warmup_lab.models.mlp import MLP
from warmup_lab.models.resnet import NORMS, SHORTCUTS, ResNet

IMAGE_FAMILIES = ("resnet", "mlp")


def build_image_model(model_cfg: DictConfig, in_channels: int, num_classes: int,
                      image_size: tuple[int, int] | None = None) -> nn.Module:
    """A classifier for `in_channels` x H x W images, from cfg.model (family: resnet | mlp).

    The MLP flattens its input, so it needs `image_size` (H, W); the ResNet pools and does not."""
    family = model_cfg.get("family")
    if family == "mlp":
        require(image_size is not None, "image_size", image_size, "(H, W): an MLP needs its input size")
        return MLP(in_channels * math.prod(image_size), num_classes, width=int(model_cfg.width),
                   depth=int(model_cfg.depth), activation=str(model_cfg.activation), bias=bool(model_cfg.get("bias", True)))
    if family != "resnet":
        raise ConfigError("model.family", family, f"one of {', '.join(IMAGE_FAMILIES)} for image tasks "
                          "(e.g. model=resnet20 or model=mlp)")
    depth = int(model_cfg.depth)
    width = float(model_cfg.get("width", 1))
    norm = str(model_cfg.get("norm", "batchnorm"))
    shortcut = str(model_cfg.get("shortcut", "A"))
    require(depth >= 8 and (depth - 2) % 6 == 0, "model.depth", depth, "6n+2 with n >= 1 (20, 32, 56, 110)")
    require(width > 0, "model.width", width, "must be > 0")
    require(norm in NORMS, "model.norm", norm, f"one of {', '.join(NORMS)}")
    require(shortcut in SHORTCUTS, "model.shortcut", shortcut, f"one of {', '.join(SHORTCUTS)}")
    return ResNet(depth, width, norm, shortcut, in_channels, num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MLP", "ResNet", "build_image_model", "count_params"]
