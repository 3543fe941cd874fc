"""CIFAR-style ResNets (He et al. 2016, section 4.2): depth 6n+2, three stages of n basic blocks.

Stages have 16/32/64 channels (times `width`) at full, 1/2 and 1/4 resolution. Shortcuts are
option A by default (identity; when the shape changes, stride-2 subsampling plus zero-padded
channels: parameter-free, as the paper's CIFAR models, which is what makes ResNet-20 0.27M
parameters); option B (1x1 conv projection + norm when the shape changes) is available.

`norm="none"` removes every normalisation layer. A plain deep ResNet without normalisation
grows its activations with depth (each residual branch adds variance), so the last conv of each
residual branch is He-initialised and then scaled by L^(-1/2) (L = number of blocks): the variance
grows by at most (1 + 1/L)^L < e over the whole net, at any depth. Each branch also gets Fixup's
scalar biases and a learnable scalar multiplier (Zhang et al. 2019). Unlike Fixup, the branch and
the head are not zero-initialised: with both at zero the first steps only move the head and the
net sits on a long plateau (measured on digits). This is the setting where warmup matters most.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batchnorm", "none")
SHORTCUTS = ("A", "B")


class Shortcut(nn.Module):
    """Identity, or the downsampling shortcut of option A (subsample + zero channels) or B (projection)."""

    def __init__(self, c_in: int, c_out: int, stride: int, option: str, norm: bool):
        super().__init__()
        self.c_in, self.c_out, self.stride, self.option = c_in, c_out, stride, option
        self.proj = None
        if (stride != 1 or c_in != c_out) and option == "B":
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm2d(c_out))
            self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.c_out != self.c_in:
            extra = self.c_out - self.c_in
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return x


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut; with norm=False scalar biases and a multiplier (as Fixup)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: bool, shortcut: str):
        super().__init__()
        self.norm = norm
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        if norm:
            self.bn1, self.bn2 = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)
        else:
            self.bias1a, self.bias1b, self.bias2a, self.bias2b = (nn.Parameter(torch.zeros(1)) for _ in range(4))
            self.scale = nn.Parameter(torch.ones(1))
        self.shortcut = Shortcut(c_in, c_out, stride, shortcut, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm:
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
        else:
            out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
            out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-(6n+2) for small images; any input size divisible by 4 (global average pooling)."""

    def __init__(self, depth: int = 20, width: float = 1, norm: str = "batchnorm", shortcut: str = "A",
                 in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        if norm not in NORMS or shortcut not in SHORTCUTS:
            raise ValueError(f"norm must be one of {NORMS} and shortcut one of {SHORTCUTS}")
        n = (depth - 2) // 6
        widths = [max(1, int(round(c * width))) for c in (16, 32, 64)]
        use_norm = norm == "batchnorm"
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not use_norm)
        self.bn1 = nn.BatchNorm2d(widths[0]) if use_norm else nn.Identity()
        blocks, c_in = [], widths[0]
        for stage, c_out in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride, use_norm, shortcut))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)
        self._init(use_norm, len(blocks))

    def _init(self, use_norm: bool, num_blocks: int) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if not use_norm:  # scaled last conv per branch: total variance growth < e
            for block in self.blocks:
                block.conv2.weight.data.mul_(num_blocks ** -0.5)
        bound = 1 / math.sqrt(self.fc.in_features)  # PyTorch's default Linear init for the head
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.uniform_(self.fc.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
