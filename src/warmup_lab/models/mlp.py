"""A fully connected network (tanh or ReLU) for the full-batch mechanisms experiments.

Cohen et al. 2021 (edge of stability) and Lewkowycz et al. 2020 (catapult) study small MLPs trained
by full-batch gradient descent; Kalra & Barkeshli 2024 use standard parameterisation. So: standard
parameterisation, weights N(0, gain^2 / fan_in) (gain 1 for tanh, sqrt(2) for ReLU: LeCun / He),
the read-out layer with gain 1, zero biases. Inputs are flattened.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from warmup_lab.errors import require

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
GAINS = {"tanh": 1.0, "relu": math.sqrt(2.0)}


class MLP(nn.Module):
    """`depth` hidden layers of `width` units, then a linear read-out to `out_features`."""

    def __init__(self, in_features: int, out_features: int, width: int = 128, depth: int = 2,
                 activation: str = "tanh", bias: bool = True):
        super().__init__()
        require(activation in ACTIVATIONS, "model.activation", activation, f"one of {', '.join(ACTIVATIONS)}")
        require(width >= 1, "model.width", width, "an integer >= 1")
        require(depth >= 1, "model.depth", depth, "an integer >= 1 (hidden layers)")
        sizes = [in_features] + [width] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out, bias=bias), ACTIVATIONS[activation]()]
        self.hidden = nn.Sequential(*layers)
        self.readout = nn.Linear(width, out_features, bias=bias)
        self._init(GAINS[activation])

    @torch.no_grad()
    def _init(self, gain: float) -> None:
        """Standard parameterisation from the global RNG (the task seeds it with the run's seed)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                g = 1.0 if m is self.readout else gain
                m.weight.normal_(0.0, g / math.sqrt(m.in_features))
                if m.bias is not None:
                    m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.hidden(x.flatten(1)))
