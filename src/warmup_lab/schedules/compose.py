"""Schedule: lr(t) for the 0-based update index t (the LR update t uses), as a pure function of the step.

It holds no state, so a resumed run cannot restart its warmup (schedule pitfall 2, docs/definitions.md).
Composition of warmup and decay:
- sequential (default): warmup for t < T_w, then the decay with progress p = (t - T_w) / (T - T_w),
  starting at the peak, so the hand-off is continuous (schedule pitfall 4, docs/definitions.md);
- multiply (pytorch-warmup, default for its shapes): lr = omega(t) * decay(t) with the decay over [0, T];
- overlay (timm warmup_prefix=False): the warmup replaces the first T_w steps of a decay over [0, T]
  (so the LR jumps at the hand-off, as timm's does).
Built and validated by warmup_lab.schedules.build.
"""

from __future__ import annotations

from typing import Any

from warmup_lab.schedules.decays import DECAY_FNS, DECAY_PARAMS
from warmup_lab.schedules.warmups import PYTORCH_WARMUP, RAMPS, WARMUP_PARAMS, pytorch_warmup_omega, radam_offset


class Schedule:
    """lr(t) for t = 0, 1, ...; t >= T stays at the final value. Build it with build_schedule."""

    def __init__(self, *, name: str | None, warmup: str, decay: str, total_steps: int, target_lr: float,
                 peak_lr: float, warmup_steps: int, warmup_rule: str, step0: str, compose: str, init_lr: float,
                 min_lr: float, params: dict[str, Any], beta2: float | None):
        self.name, self.warmup, self.decay = name, warmup, decay
        self.total_steps, self.target_lr, self.peak_lr = total_steps, target_lr, peak_lr
        self.warmup_steps, self.warmup_rule, self.step0, self.compose = warmup_steps, warmup_rule, step0, compose
        self.init_lr, self.min_lr, self.params, self.beta2 = init_lr, min_lr, params, beta2
        self.floor = params["end_lr"] if decay == "polynomial" and params["end_lr"] is not None else min_lr
        self._offset = radam_offset(beta2) if warmup == "radam" else 0
        self.hold_until_loss = params.get("hold_until_loss")

    # -- values ------------------------------------------------------------------------------
    def __call__(self, t: int) -> float:
        return self.at(t)

    def at(self, t: int, release_step: int | None = None) -> float:
        """lr(t); `release_step` ends a loss-threshold constant warmup early (it is capped at T_w)."""
        t = int(t)
        if t < 0:
            raise ValueError(f"step must be >= 0, got {t}")
        t = min(t, self.total_steps)
        tw = self.warmup_steps
        if release_step is not None and self.hold_until_loss is not None:
            tw = min(tw, max(0, int(release_step)))
        if self.compose == "multiply":
            return self._warm_factor(t, tw) * self._decay_lr(t, 0)
        if t < tw:
            return self._warm_lr(t, tw)
        return self._decay_lr(t, 0 if self.compose == "overlay" else tw)

    def _omega(self, t: int) -> float:
        n = t if self.step0 == "shifted" else t - 1  # pytorch-warmup's own indexing is `shifted`
        return pytorch_warmup_omega(self.warmup, n, self.beta2, self.warmup_steps, self._offset)

    def _warm_lr(self, t: int, tw: int) -> float:
        init, top = self.init_lr, self.peak_lr
        if self.warmup == "constant":
            return init
        if self.warmup in PYTORCH_WARMUP:
            return init + (top - init) * self._omega(t)
        u = (t + 1 if self.step0 == "shifted" else t) / tw
        if self.warmup == "geometric":
            return init * (top / init) ** u
        return init + (top - init) * RAMPS[self.warmup](u, self.params)

    def _warm_factor(self, t: int, tw: int) -> float:
        if self.warmup in PYTORCH_WARMUP:
            r = self.init_lr / self.peak_lr
            return r + (1.0 - r) * self._omega(t)
        return self._warm_lr(t, tw) / self.peak_lr if t < tw else 1.0

    def _decay_lr(self, t: int, start: int) -> float:
        f = DECAY_FNS[self.decay](t, start, self.total_steps, self.params)
        return self.floor + (self.peak_lr - self.floor) * f

    @property
    def final_lr(self) -> float:
        return self.at(self.total_steps)

    def curve(self, steps: int | None = None) -> list[float]:
        """lr(t) for t = 0 .. steps-1 (default T)."""
        return [self.at(t) for t in range(self.total_steps if steps is None else steps)]

    # -- record ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Flat, JSON-able: what a run summary records about its schedule."""
        out: dict[str, Any] = {
            "name": self.name, "warmup": self.warmup, "decay": self.decay, "compose": self.compose,
            "warmup_steps": self.warmup_steps, "warmup_rule": self.warmup_rule, "step0": self.step0,
            "total_steps": self.total_steps, "target_lr": self.target_lr, "peak_lr": self.peak_lr,
            "init_lr": self.init_lr, "min_lr": self.min_lr, "final_lr": self.final_lr,
        }
        if self.beta2 is not None and self.warmup in PYTORCH_WARMUP:
            out["beta2"] = self.beta2
        for key in WARMUP_PARAMS.get(self.warmup, ()) + DECAY_PARAMS.get(self.decay, ()):
            out[key] = self.params[key]
        if self.decay == "wsd":
            out["decay_steps"] = self.params["decay_steps"]
        return out

    def __repr__(self) -> str:
        return f"Schedule({self.describe()})"

