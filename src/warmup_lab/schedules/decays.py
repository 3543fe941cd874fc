"""Decays: the fraction f of the way from the floor (min_lr) to the peak, for t >= the decay start.

lr = floor + (peak - floor) * f(t). `start` is T_w (sequential composition) or 0 (multiply/overlay);
p = (t - start) / max(1, T - start), and t >= T is evaluated at t = T, p = 1 (the final value: cosine
never climbs back, schedule pitfall 5, docs/definitions.md). Formulas follow the library each decay has parity with.
"""

from __future__ import annotations

import math
from typing import Callable

DECAYS: tuple[str, ...] = ("constant", "cosine", "cosine_restarts", "linear", "polynomial", "step", "exponential",
                           "inverse_sqrt", "noam", "wsd")

# decay -> the config keys it reads (for describe())
DECAY_PARAMS: dict[str, tuple[str, ...]] = {
    "cosine": ("cycles",),
    "cosine_restarts": ("t0", "t_mult", "cycles"),
    "polynomial": ("power", "end_lr"),
    "step": ("milestones", "gamma"),
    "exponential": ("decay_rate",),
    "inverse_sqrt": ("timescale",),
    "noam": ("d_model",),
    "wsd": ("decay_ratio", "wsd_decay", "cycles"),
}


def _progress(t: int, start: int, total: int) -> float:
    return 1.0 if t >= total else float(t - start) / float(max(1, total - start))


def _constant(t: int, start: int, total: int, p: dict) -> float:
    return 1.0


def _cosine(t: int, start: int, total: int, p: dict) -> float:
    # HF get_cosine_schedule_with_warmup; cycles = num_cycles (0.5 = one half-wave down to the floor)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(p["cycles"]) * 2.0 * _progress(t, start, total))))


def _cosine_restarts(t: int, start: int, total: int, p: dict) -> float:
    if p["t0"] is not None:  # SGDR / torch CosineAnnealingWarmRestarts(T_0=t0, T_mult=t_mult)
        t_cur, t_i = min(t, total) - start, int(p["t0"])
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= int(p["t_mult"])
        return (1 + math.cos(math.pi * t_cur / t_i)) / 2
    prog = _progress(t, start, total)  # HF get_cosine_with_hard_restarts_schedule_with_warmup
    if prog >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(p["cycles"]) * prog) % 1.0))))


def _linear(t: int, start: int, total: int, p: dict) -> float:
    # HF get_linear_schedule_with_warmup
    return max(0.0, float(total - min(t, total)) / float(max(1, total - start)))


def _polynomial(t: int, start: int, total: int, p: dict) -> float:
    # HF get_polynomial_decay_schedule_with_warmup / torch PolynomialLR (floor = end_lr)
    return (1.0 - _progress(t, start, total)) ** p["power"]


def _step(t: int, start: int, total: int, p: dict) -> float:
    # torch MultiStepLR; milestones are absolute training steps
    t = min(t, total)
    return p["gamma"] ** sum(1 for m in p["milestones"] if t >= m)


def _exponential(t: int, start: int, total: int, p: dict) -> float:
    # torch ExponentialLR(gamma=decay_rate), counted from the decay start
    return p["decay_rate"] ** (min(t, total) - start)


def _inverse_sqrt(t: int, start: int, total: int, p: dict) -> float:
    # HF get_inverse_sqrt_schedule: timescale defaults to T_w (10_000 when T_w = 0)
    ts = p["timescale"]
    return 1.0 / math.sqrt((min(t, total) + ts - start) / ts)


def _noam(t: int, start: int, total: int, p: dict) -> float:
    # Vaswani: peak * sqrt(T_w / t) from T_w on (the peak carries d_model^-0.5 T_w^-0.5); 1 before T_w
    w = max(p["noam_w"], 1)
    return math.sqrt(w / max(min(t, total), w))


def _wsd(t: int, start: int, total: int, p: dict) -> float:
    # HF get_wsd_schedule: stable until T - D, then decay over D = floor(decay_ratio * T) steps
    d = p["decay_steps"]
    if t < total - d:
        return 1.0
    if t >= total:
        return 0.0
    prog = float(t - (total - d)) / float(max(1, d))
    kind = p["wsd_decay"]
    if kind == "linear":
        return 1.0 - prog
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * float(p["cycles"]) * 2.0 * prog))
    return 1.0 - math.sqrt(prog)  # 1-sqrt


DECAY_FNS: dict[str, Callable[[int, int, int, dict], float]] = {
    "constant": _constant, "cosine": _cosine, "cosine_restarts": _cosine_restarts, "linear": _linear,
    "polynomial": _polynomial, "step": _step, "exponential": _exponential, "inverse_sqrt": _inverse_sqrt,
    "noam": _noam, "wsd": _wsd,
}
WSD_DECAYS = ("cosine", "linear", "1-sqrt")
