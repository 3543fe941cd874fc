"""In-memory image data on the run's device, and training batches as a pure function of (seed, step).

Every data set here is small enough to live on the device as one tensor (airbench style): no
DataLoader, no worker processes (which crash under joblib), no per-step host copies. A batch is
computed from (seed, step) alone: the sample order of epoch e is a permutation drawn from a
generator seeded by (seed, e), and the augmentation of step t from one seeded by (seed, t), so a
resumed run sees exactly the batches an uninterrupted run would.

Data sets that need no network: `digits` (scikit-learn's real handwritten digits, shipped inside
the package) and `shapes` (procedural, generated from `data.seed`). CIFAR-10 is in cifar10.py.
Any of them can be standardised per pixel (`standardise_pixels`) and given noisy training labels
(`corrupt_labels`): `data.normalise` and `data.label_noise`, applied by `load_image_data`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from warmup_lab.data.seeds import derive_seed, generator
from warmup_lab.errors import require


@dataclass
class ImageData:
    """Normalised float images (N, C, H, W) and int64 labels, already on the device."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def normalise(x_train: torch.Tensor, x_test: torch.Tensor, mean: Any = None, std: Any = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation; the statistics come from the training split unless given."""
    if mean is None:
        mean, std = x_train.mean(dim=(0, 2, 3)), x_train.std(dim=(0, 2, 3))
    mean = torch.as_tensor(mean, dtype=x_train.dtype, device=x_train.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x_train.dtype, device=x_train.device).view(1, -1, 1, 1)
    return (x_train - mean) / std, (x_test - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random crop after zero padding by `pad` (zero = the mean after normalisation) and random
    horizontal flip, vectorised over the batch with one gather (no per-sample Python loop)."""
    n, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                   rows, cols]
    if flip:
        mirror = torch.rand(n, generator=gen, device=dev) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


class Batches:
    """`batches(step)` -> (x, y): the training batch of that step, identical on every call.

    Epochs drop the last partial batch (steps_per_epoch = n_train // batch_size), so every batch
    has exactly `batch_size` samples. The last epoch's permutation is cached (it is only a cache:
    it is recomputed from (seed, epoch) whenever another epoch is asked for).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 augment: bool = True, pad: int = 4, flip: bool = True):
        require(1 <= batch_size <= len(x), "train.batch_size", batch_size,
                f"must be between 1 and the number of training samples ({len(x)})")
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.augment, self.pad, self.flip = augment, pad, flip
        self.steps_per_epoch = len(x) // batch_size
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = generator(self.x.device, "order", self.seed, epoch)
            self._perm = torch.randperm(len(self.x), generator=gen, device=self.x.device)
            self._epoch = epoch
        return self._perm

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        require(step >= 0, "step", step, "must be >= 0")
        epoch, i = divmod(int(step), self.steps_per_epoch)
        idx = self.permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        x, y = self.x[idx], self.y[idx]
        if self.augment and (self.pad > 0 or self.flip):
            x = augment(x, generator(x.device, "augment", self.seed, int(step)), self.pad, self.flip)
        return x, y


class FullBatch:
    """`batch(step)` -> the whole training set, the same tensors at every step: full-batch GD.

    No augmentation (it would make the loss a different function at every step)."""

    augment, flip = False, False
    steps_per_epoch = 1

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y, self.batch_size = x, y, len(x)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        require(step >= 0, "step", step, "must be >= 0")
        return self.x, self.y


def take_subset(data: ImageData, subset: int | None) -> ImageData:
    """The first `subset` training samples (a fixed subset: the split does not depend on the run seed)."""
    if subset is None:
        return data
    require(1 <= int(subset) <= len(data.x_train), "data.subset", subset,
            f"null or between 1 and the {len(data.x_train)} training samples")
    n = int(subset)
    return ImageData(data.name, data.x_train[:n], data.y_train[:n], data.x_test, data.y_test, data.num_classes,
                     {**data.info, "subset": n})


def standardise_pixels(data: ImageData) -> ImageData:
    """Every input feature (channel x pixel) standardised to mean 0 and std 1 over the training set.

    Cohen et al. 2021's preprocessing for full-batch GD (they centre and scale every CIFAR-10 feature).
    The default per-channel standardisation leaves each pixel its own mean: on digits the border
    pixels are always blank, so every image shares one large common component, and the top Hessian
    direction at initialisation moves every output alike (98% of the output change along it is common
    to all samples, for the tanh MLP 2 x 128 with MSE on 500 digits at 8 x 8); its curvature, lambda0 =
    52.8, does not grow in training. Per pixel, none of it is common, lambda0 = 12.5, and the top
    direction is one that training sharpens. A pixel constant over the training set (std 0) is only
    centred (it becomes 0), not divided. Per-channel standardisation is an increasing affine map per
    channel, so applying this after it equals standardising the raw pixels.
    """
    mean, std = data.x_train.mean(dim=0, keepdim=True), data.x_train.std(dim=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ImageData(data.name, (data.x_train - mean) / std, data.y_train, (data.x_test - mean) / std, data.y_test,
                     data.num_classes, {**data.info, "normalise": "pixel"})


def corrupt_labels(data: ImageData, fraction: float) -> ImageData:
    """A fixed `fraction` of the training labels replaced by labels drawn uniformly from the classes.

    round(fraction x n_train) training samples, chosen at random, get a uniform random class (about
    1/num_classes of them keep their label by chance), as Zhang et al. 2017's partially corrupted
    labels. The draw is a fixed generator's, independent of the run seed: every seed of a sweep trains
    on the same labels. The held-out labels stay clean. A harder full-batch fit: the net must memorise
    the corrupted samples, so the loss does not reach zero before progressive sharpening has happened.
    """
    require(0.0 <= fraction <= 1.0, "data.label_noise", fraction, "a fraction between 0 and 1")
    n = len(data.y_train)
    k = round(fraction * n)
    gen = torch.Generator().manual_seed(derive_seed("label_noise", data.name, n))
    idx = torch.randperm(n, generator=gen)[:k]
    new = torch.randint(0, data.num_classes, (k,), generator=gen)
    y = data.y_train.clone()
    y[idx.to(y.device)] = new.to(y.device)
    changed = int((y != data.y_train).sum())
    return ImageData(data.name, data.x_train, y, data.x_test, data.y_test, data.num_classes,
                     {**data.info, "label_noise": float(fraction), "labels_changed": changed})


# -- digits: scikit-learn's real handwritten digits (1797 8x8 grey images, 10 classes) ------------
def load_digits(size: int = 16, n_test: int = 300, device: torch.device | str = "cpu") -> ImageData:
    """Digits resized to size x size (bilinear), with a fixed train/test split (independent of the
    run seed, so every seed of a sweep sees the same split), standardised with train statistics."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    require(0 < n_test < len(x), "data.n_test", n_test, f"must be between 1 and {len(x) - 1}")
    require(size >= 4, "data.size", size, "must be >= 4")
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[n_test:], order[:n_test]
    x_train, x_test = normalise(x[train], x[test])
    return ImageData("digits", x_train.to(device), y[train].to(device), x_test.to(device), y[test].to(device), 10,
                     {"source": "sklearn.datasets.load_digits"})


# -- shapes: a procedural 10-class set ----------------------------------------------------------
SHAPE_CLASSES = ("hbar", "vbar", "hgrating", "vgrating", "disk", "ring", "square", "square_outline", "plus", "x")


def render_shapes(labels: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Render one 3-channel image per label: a shape with random centre, scale, thickness, small
    rotation, random foreground/background colours and pixel noise. Every class maps to itself
    under a horizontal flip, so flip augmentation is label-preserving."""
    n = len(labels)

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=gen)).view(n, 1, 1)

    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    cx, cy, r = u(-0.3, 0.3), u(-0.3, 0.3), u(0.4, 0.75)
    thick, period = u(0.22, 0.36), u(0.45, 0.7)
    theta = u(-0.25, 0.25) + (labels == 9).float().view(n, 1, 1) * (math.pi / 4)
    dx, dy = xx - cx, yy - cy
    a = dx * torch.cos(theta) + dy * torch.sin(theta)      # along the shape's own axes
    b = -dx * torch.sin(theta) + dy * torch.cos(theta)
    half = thick / 2
    rad, box = torch.sqrt(a**2 + b**2), torch.maximum(a.abs(), b.abs())
    inside = box < r
    cross = ((a.abs() < half) & (b.abs() < r)) | ((b.abs() < half) & (a.abs() < r))
    masks = torch.stack([
        (b.abs() < half) & (a.abs() < r),                                  # hbar
        (a.abs() < half) & (b.abs() < r),                                  # vbar
        inside & (torch.sin(2 * math.pi * b / period) > 0),                # hgrating
        inside & (torch.sin(2 * math.pi * a / period) > 0),                # vgrating
        rad < r,                                                           # disk
        (rad - r).abs() < half,                                            # ring
        inside,                                                            # square
        (box - r).abs() < half,                                            # square outline
        cross, cross,                                                      # plus, x (x is rotated 45 degrees)
    ], dim=1).float()
    mask = masks[torch.arange(n), labels].unsqueeze(1)                     # (n, 1, H, W)
    bg = torch.rand(n, 3, 1, 1, generator=gen)
    sign = torch.where(bg.mean(dim=1, keepdim=True) > 0.5, -1.0, 1.0)
    fg = (bg + sign * (0.35 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen))
          + 0.15 * torch.randn(n, 3, 1, 1, generator=gen)).clamp(0, 1)
    noise = u(0.05, 0.25).view(n, 1, 1, 1) * torch.randn(n, 3, size, size, generator=gen)
    return bg + mask * (fg - bg) + noise


def load_shapes(n_train: int = 5000, n_test: int = 1000, size: int = 16, seed: int = 0,
                device: torch.device | str = "cpu") -> ImageData:
    """The procedural set, a pure function of (n_train, n_test, size, seed); balanced classes."""
    require(n_train >= 10, "data.n_train", n_train, "must be >= 10")
    require(n_test >= 10, "data.n_test", n_test, "must be >= 10")
    require(size >= 8, "data.size", size, "must be >= 8")
    gen = torch.Generator().manual_seed(int(seed))
    labels = torch.arange(n_train + n_test) % len(SHAPE_CLASSES)
    labels = labels[torch.randperm(len(labels), generator=gen)]
    x = render_shapes(labels, size, gen)
    x_train, x_test = normalise(x[:n_train], x[n_train:])
    return ImageData("shapes", x_train.to(device), labels[:n_train].to(device), x_test.to(device),
                     labels[n_train:].to(device), len(SHAPE_CLASSES), {"classes": list(SHAPE_CLASSES)})
