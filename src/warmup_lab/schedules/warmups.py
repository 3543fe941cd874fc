"""Warmup shapes: the LR for t < T_w, as a fraction of the way from eta_init to the peak.

Two families:
- ramps of u = t/T_w (step0 `zero`, HF) or (t+1)/T_w (step0 `shifted`, nanoGPT-like): linear, cosine,
  polynomial (Kalra & Barkeshli), exponential (seed 001), geometric, constant;
- pytorch-warmup's multipliers omega(n), n its 0-based step index: untuned_linear, untuned_exponential,
  radam. Their length comes from beta2 exactly as pytorch-warmup computes it (schedule pitfall 8, docs/definitions.md).
"""

from __future__ import annotations

import math
from typing import Callable

RampFn = Callable[[float, dict], float]

# fraction g(u) in [0, 1] of the way from eta_init to the peak, for u in [0, 1]
RAMPS: dict[str, RampFn] = {
    "linear": lambda u, p: u,
    "cosine": lambda u, p: 0.5 * (1.0 - math.cos(math.pi * u)),
    "polynomial": lambda u, p: u ** p["warmup_power"],
    "exponential": lambda u, p: (
        (1.0 - math.exp(-p["exp_rate"] * u)) / ((1.0 - math.exp(-p["exp_rate"])) if p["exp_normalize"] else 1.0)
    ),
}

# pytorch-warmup multipliers: name -> (period rule from beta2, as pytorch-warmup writes it)
PYTORCH_WARMUP = {
    "untuned_linear": lambda b2: int(2.0 / (1.0 - b2)),
    "untuned_exponential": lambda b2: int(1.0 / (1.0 - b2)),
    "radam": lambda b2: int(2.0 / (1.0 - b2)),  # nominal only (Ma & Yarats: RAdam ~ 2/(1-beta2) linear)
}

WARMUPS: tuple[str, ...] = ("none", "constant", "linear", "exponential", "geometric", "cosine", "polynomial",
                            "untuned_linear", "untuned_exponential", "radam")

# shape -> the config keys it reads (for describe())
WARMUP_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": ("hold_until_loss",),
    "polynomial": ("warmup_power",),
    "exponential": ("exp_rate", "exp_normalize"),
}


def radam_offset(beta2: float) -> int:
    """pytorch-warmup's get_offset: the first t with rho_t > 4."""
    rho_inf = 2.0 / (1 - beta2) - 1
    offset = 1
    while _rho(offset, beta2, rho_inf) <= 4:
        offset += 1
    return offset


def _rho(t: int, beta2: float, rho_inf: float) -> float:
    b2t = beta2 ** t
    return rho_inf - 2 * t * b2t / (1 - b2t)


def pytorch_warmup_omega(shape: str, n: int, beta2: float, period: int, offset: int) -> float:
    """pytorch-warmup's warmup_factor(step=n); n = -1 (the step before the first) gives 0."""
    if n < 0:
        return 0.0
    if shape == "untuned_linear":
        return min(1.0, (n + 1) / period)
    if shape == "untuned_exponential":
        return 1.0 - math.exp(-(n + 1) / period)
    rho_inf = 2.0 / (1 - beta2) - 1
    rho = _rho(n + offset, beta2, rho_inf)
    return math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
