"""Image data sets kept in memory on the device, chosen by `cfg.data.name`."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from warmup_lab.data.images import (Batches, FullBatch, ImageData, augment, corrupt_labels, load_digits, load_shapes,
                                    standardise_pixels, take_subset)
from warmup_lab.data.seeds import derive_seed
from warmup_lab.errors import ConfigError

IMAGE_DATA = ("cifar10", "digits", "shapes")
NORMALISE = ("channel", "pixel")


def load_image_data(data_cfg: DictConfig, device: torch.device | str = "cpu") -> ImageData:
    """Load cfg.data (cifar10 | digits | shapes) onto `device`, then apply the options every image set has.

    `data.normalise`: channel (absent = the default: per-channel standardisation) or pixel (every
    feature standardised on the training set, Cohen et al. 2021's preprocessing). `data.label_noise`:
    the fraction of training labels replaced by random ones (absent or 0 = clean labels). Both act on
    the training set the run uses (after `data.subset`). Absent keys leave the config, and its hash,
    as it was before the options existed.
    """
    data = _load(data_cfg, device)
    normalise = data_cfg.get("normalise")
    if normalise is not None and normalise not in NORMALISE:
        raise ConfigError("data.normalise", normalise, f"one of {', '.join(NORMALISE)}")
    if normalise == "pixel":
        data = standardise_pixels(data)
    noise = data_cfg.get("label_noise")
    if noise is not None:
        data = corrupt_labels(data, float(noise))
    return data


def _load(data_cfg: DictConfig, device: torch.device | str) -> ImageData:
    name = data_cfg.get("name")
    if name == "cifar10":
        from warmup_lab.data.cifar10 import load_cifar10

        subset = data_cfg.get("subset")
        return load_cifar10(str(data_cfg.root), bool(data_cfg.get("download", True)),
                            None if subset is None else int(subset), device)
    if name == "digits":
        subset = data_cfg.get("subset")  # null = all 1497 training digits
        return take_subset(load_digits(int(data_cfg.get("size", 16)), int(data_cfg.get("n_test", 300)), device), subset)
    if name == "shapes":
        return load_shapes(int(data_cfg.get("n_train", 5000)), int(data_cfg.get("n_test", 1000)),
                           int(data_cfg.get("size", 16)), int(data_cfg.get("seed", 0)), device)
    raise ConfigError("data.name", name, f"one of {', '.join(IMAGE_DATA)} for image tasks")


__all__ = ["Batches", "FullBatch", "ImageData", "IMAGE_DATA", "NORMALISE", "augment", "corrupt_labels", "derive_seed",
           "load_image_data", "standardise_pixels"]
