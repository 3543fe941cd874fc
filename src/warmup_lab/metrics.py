"""The measurements of a run, defined once (DESIGN.md section 2).

The trainer feeds losses in as they happen; the max-stable-LR search and the reports read the same
definitions back (statuses in runs.py, LR sensitivity here). Every detector is plain Python state that
round-trips through `state_dict()`, so a resumed run detects exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from warmup_lab.errors import require


@dataclass
class SpikeDetector:
    """A spike: a finite loss above `ratio` x the median of the previous `window` finite losses."""

    ratio: float = 2.0
    window: int = 20
    burn_in: int = 10
    history: list[float] = field(default_factory=list)
    events: list[dict[str, float]] = field(default_factory=list)

    def update(self, step: int, loss: float) -> bool:
        if not math.isfinite(loss):
            return False
        spike = False
        if step >= self.burn_in and len(self.history) >= min(self.window, max(self.burn_in, 1)):
            median = statistics.median(self.history)
            if median > 0 and loss > self.ratio * median:
                self.events.append({"step": step, "loss": loss, "ratio": loss / median})
                spike = True
        self.history.append(loss)
        del self.history[: -self.window]
        return spike

    def stats(self) -> dict[str, Any]:
        return {
            "spike_count": len(self.events),
            "max_spike_ratio": max((e["ratio"] for e in self.events), default=0.0),
            "first_spike_step": self.events[0]["step"] if self.events else None,
        }


@dataclass
class DivergenceDetector:
    """Divergence: a non-finite loss at once, or loss > factor x l0 (or `ceiling`) for `patience` steps."""

    factor: float = 10.0
    patience: int = 3
    ceiling: float | None = None
    l0: float | None = None
    streak: int = 0
    diverged_step: int | None = None

    def update(self, step: int, loss: float) -> bool:
        if self.diverged_step is not None:
            return True
        if not math.isfinite(loss):
            self.diverged_step = step
            return True
        if self.l0 is None:
            self.l0 = loss
        limit = self.ceiling if self.ceiling is not None else self.factor * self.l0
        self.streak = self.streak + 1 if loss > limit else 0
        if self.streak >= self.patience:
            self.diverged_step = step
        return self.diverged_step is not None


@dataclass
class CatapultDetector:
    """A catapult: the loss climbs well above its best so far, then comes back down (Kalra & Barkeshli).

    Single-step spikes are not catapults: the detector follows the median of the last `smooth` losses,
    which must rise above `rise` x its running minimum and later fall below `recover` x that minimum.
    The minimum is floored at `floor` x l0 so that noise on a near-zero loss is not read as a catapult.
    """

    rise: float = 2.0
    recover: float = 1.2
    smooth: int = 5
    floor: float = 0.05
    recent: list[float] = field(default_factory=list)
    best: float | None = None
    l0: float | None = None
    open_event: dict[str, float] | None = None
    events: list[dict[str, float]] = field(default_factory=list)

    def update(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        if self.l0 is None:
            self.l0 = loss
        self.recent.append(loss)
        del self.recent[: -self.smooth]
        level = statistics.median(self.recent)
        base = max(self.best if self.best is not None else level, self.floor * self.l0)
        if self.open_event is None:
            if len(self.recent) == self.smooth and level > self.rise * base:
                self.open_event = {"start": step, "base": base, "peak": loss, "peak_step": step}
            else:
                self.best = level if self.best is None else min(self.best, level)
            return
        event = self.open_event
        if loss > event["peak"]:
            event["peak"], event["peak_step"] = loss, step
        if level < self.recover * event["base"]:
            event.update(end=step, duration=step - event["start"], peak_ratio=event["peak"] / event["base"])
            self.events.append(event)
            self.open_event = None
            self.best = min(event["base"], level)

    def stats(self) -> dict[str, Any]:
        return {
            "catapult_count": len(self.events),
            "max_catapult_ratio": max((e["peak_ratio"] for e in self.events), default=0.0),
            "catapults": [dict(e) for e in self.events],
        }


class Monitor:
    """All live detectors of one run, fed one loss per step."""

    def __init__(self, detect: Mapping[str, Any]):
        spike, div, cat = detect["spike"], detect["divergence"], detect["catapult"]
        require(float(spike["ratio"]) > 1, "detect.spike.ratio", spike["ratio"], "must be > 1")
        require(int(spike["window"]) >= 1, "detect.spike.window", spike["window"], "must be >= 1")
        require(float(div["factor"]) > 1, "detect.divergence.factor", div["factor"], "must be > 1")
        require(int(div["patience"]) >= 1, "detect.divergence.patience", div["patience"], "must be >= 1")
        self.spikes = SpikeDetector(float(spike["ratio"]), int(spike["window"]), int(spike["burn_in"]))
        ceiling = div.get("ceiling")
        self.divergence = DivergenceDetector(
            float(div["factor"]), int(div["patience"]), None if ceiling is None else float(ceiling)
        )
        self.catapults = CatapultDetector(float(cat["rise"]), float(cat["recover"]))

    def update(self, step: int, loss: float) -> tuple[bool, bool]:
        """Returns (is_spike, diverged)."""
        spike = self.spikes.update(step, loss)
        diverged = self.divergence.update(step, loss)
        if not diverged:
            self.catapults.update(step, loss)
        return spike, diverged

    @property
    def l0(self) -> float | None:
        return self.divergence.l0

    def stats(self) -> dict[str, Any]:
        return {**self.spikes.stats(), **self.catapults.stats(), "diverged_step": self.divergence.diverged_step}

    def state_dict(self) -> dict[str, Any]:
        return {"spikes": asdict(self.spikes), "divergence": asdict(self.divergence), "catapults": asdict(self.catapults)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.spikes = SpikeDetector(**state["spikes"])
        self.divergence = DivergenceDetector(**state["divergence"])
        self.catapults = CatapultDetector(**state["catapults"])


def failed_to_train(
    final_loss: float, l0: float, final_acc: float | None, chance_acc: float | None, failed: Mapping[str, Any]
) -> bool:
    """A finite run that learned nothing: final loss >= l0 - margin, or accuracy within a margin of chance.

    `min_acc` (optional) raises the bar for proxy tasks whose tuned runs are near-perfect: a run that ends
    below it learned nothing useful, even if it beat chance (a BatchNorm ResNet at a huge LR often
    neither diverges nor learns). It is part of the printed criterion wherever it is set.
    """
    if final_loss >= l0 - float(failed.get("loss_margin", 0.0)):
        return True
    if final_acc is None:
        return False
    min_acc = failed.get("min_acc")
    if min_acc is not None and final_acc < float(min_acc):
        return True
    return chance_acc is not None and final_acc <= chance_acc + float(failed.get("acc_margin", 0.0))


def lr_sensitivity(lrs: Iterable[float], final_losses: Iterable[float], init_losses: Iterable[float]) -> float:
    """Wortsman et al. 2023: mean over the LR range of min(final, init loss) minus the best final loss.

    Non-finite final losses (diverged runs) count as the init loss, as the definition's min() implies.
    The best loss is taken over the same capped values: identical to the paper's whenever some LR
    trains, and 0 (not negative) when no LR in the range gets below its initial loss.
    """
    rows = list(zip(lrs, final_losses, init_losses))
    if not rows:
        return float("nan")
    capped = [min(f, i) if math.isfinite(f) else i for _, f, i in rows]
    return sum(capped) / len(capped) - min(capped)
