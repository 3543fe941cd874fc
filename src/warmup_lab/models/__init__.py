"""Models built from `cfg.model`; the data decides input channels and classes (or vocabulary and length).

A group with `_target_` (model=custom) is a user's model class, built by warmup_lab.plugins with the sizes."""

from __future__ import annotations

import math

from omegaconf import DictConfig
from torch import nn

from warmup_lab.errors import ConfigError, require
from warmup_lab.models.mlp import MLP
from warmup_lab.models.resnet import NORMS, SHORTCUTS, ResNet
from warmup_lab.models.transformer import build_transformer
from warmup_lab.plugins import build_model_plugin, is_plugin_group

IMAGE_FAMILIES = ("resnet", "mlp")


def build_image_model(model_cfg: DictConfig, in_channels: int, num_classes: int,
                      image_size: tuple[int, int] | None = None) -> nn.Module:
    """A classifier for `in_channels` x H x W images, from cfg.model (family: resnet | mlp).

    The MLP flattens its input, so it needs `image_size` (H, W); the ResNet pools and does not."""
    if is_plugin_group(model_cfg):
        return build_model_plugin(model_cfg, None, in_channels=in_channels, num_classes=num_classes,
                                  image_size=tuple(image_size) if image_size is not None else None)
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


def build_sequence_model(model_cfg: DictConfig, vocab_size: int, seq_len: int, seed: int) -> nn.Module:
    """A model mapping tokens [B, L] to logits [B, L, vocab_size]: the Transformer, or model=custom's class."""
    if is_plugin_group(model_cfg):
        return build_model_plugin(model_cfg, seed, vocab_size=vocab_size, seq_len=seq_len)
    return build_transformer(model_cfg, vocab_size, seq_len, seed)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MLP", "ResNet", "build_image_model", "build_sequence_model", "count_params"]
