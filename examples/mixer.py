"""An MLP-Mixer (Tolstikhin et al. 2021) for the built-in image data, as a warmup-lab model plug-in.

    warmup-lab train task=digits model=custom model._target_=mixer.MLPMixer +model.dim=64

warmup-lab calls MLPMixer(in_channels=..., image_size=(H, W), num_classes=..., **your model keys)
and trains it on its own data; everything else (optimizers, schedules, sweeps, advise) works unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, tokens, dim]
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MLPMixer(nn.Module):
    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int, patch: int = 2,
                 dim: int = 64, depth: int = 4, token_hidden: int = 64, channel_hidden: int = 128):
        super().__init__()
        height, width = image_size
        if height % patch or width % patch:
            raise ValueError(f"patch={patch} must divide the image size {image_size}")
        tokens = (height // patch) * (width // patch)
        self.embed = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.Sequential(*(MixerBlock(tokens, dim, token_hidden, channel_hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W] -> logits [B, num_classes]
        x = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))
