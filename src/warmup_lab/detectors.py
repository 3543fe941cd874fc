"""The detectors of a run: spikes, divergence, catapults and failure to train, defined once (docs/definitions.md).

The trainer feeds losses in as they happen and writes the plain-rule status; the criteria, eta_max and
their statistics over seeds live in warmup_lab.stability, which reads the summaries back. Every detector is plain Python state that
round-trips through `state_dict()`, so a resumed run detects exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from warmup_lab.errors import require


@dataclass
class SpikeDetector:
    """Spike events (docs/definitions.md#spike-event): a run of consecutive spike steps is ONE event.

    A step is a spike when its finite loss exceeds `ratio` x its reference. The reference is the median
    of the previous `window` non-spike finite losses, or l0 (the first loss) while that window fills, so
    the first steps are watched too (the largest spikes come first). The reference is floored at
    `floor` x l0 and at `abs_floor`, which keeps minibatch jitter near zero loss out. Spike steps do not
    enter the window: a sustained excursion stays one event until the loss is back under the bar.
    """

    ratio: float            # the settings: detect.spike in conf/train.yaml (their only defaults)
    window: int
    floor: float
    abs_floor: float
    l0: float | None = None
    history: list[float] = field(default_factory=list)
    events: list[dict[str, float]] = field(default_factory=list)
    open_event: dict[str, float] | None = None

    def reference(self) -> float:
        assert self.l0 is not None
        ref = statistics.median(self.history) if len(self.history) >= self.window else self.l0
        return max(ref, self.floor * self.l0, self.abs_floor)

    def update(self, step: int, loss: float) -> bool:
        if not math.isfinite(loss):
            return False
        if self.l0 is None:
            self.l0 = loss
            self.history.append(loss)
            return False
        ref = self.reference()
        if ref > 0 and loss > self.ratio * ref:
            event = self.open_event
            if event is None:
                event = self.open_event = {"start": step, "length": 0, "peak_step": step, "peak_loss": loss,
                                           "peak_ratio": loss / ref}
            event["length"] += 1
            if loss / ref > event["peak_ratio"]:
                event.update(peak_step=step, peak_loss=loss, peak_ratio=loss / ref)
            return True
        self._close()
        self.history.append(loss)
        del self.history[: -self.window]
        return False

    def _close(self) -> None:
        if self.open_event is not None:
            self.events.append(self.open_event)
            self.open_event = None

    def all_events(self) -> list[dict[str, float]]:
        """Closed events, then the one still open at the last step (a run may end inside one)."""
        return [dict(e) for e in self.events] + ([dict(self.open_event)] if self.open_event else [])

    def stats(self) -> dict[str, Any]:
        events = self.all_events()
        return {
            "spike_events": len(events),
            "spike_steps": sum(int(e["length"]) for e in events),
            "max_spike_ratio": max((e["peak_ratio"] for e in events), default=0.0),
            "first_spike_step": events[0]["start"] if events else None,
        }


def divergence_limit(ceiling: float | None, factor: float, l0: float) -> float:
    """The loss above which a step counts toward divergence: `ceiling` if set, else factor x l0."""
    return ceiling if ceiling is not None else factor * l0


@dataclass
class DivergenceDetector:
    """Divergence: a non-finite loss at once, or loss > factor x l0 (or `ceiling`) for `patience` steps."""

    factor: float           # the settings: detect.divergence in conf/train.yaml
    patience: int
    ceiling: float | None
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
        limit = divergence_limit(self.ceiling, self.factor, self.l0)
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

    rise: float             # the settings: detect.catapult in conf/train.yaml
    recover: float
    smooth: int = 5         # part of the definition, not a setting
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
        require("burn_in" not in spike, "detect.spike.burn_in", spike.get("burn_in"),
                "no longer exists: the first steps are watched against l0; drop it (detect.spike.floor sets the noise floor)")
        require(float(div["factor"]) > 1, "detect.divergence.factor", div["factor"], "must be > 1")
        require(int(div["patience"]) >= 1, "detect.divergence.patience", div["patience"], "must be >= 1")
        check_failed_rule(detect["failed"])
        self.spikes = SpikeDetector(float(spike["ratio"]), int(spike["window"]), float(spike["floor"]),
                                    float(spike["abs_floor"]))
        ceiling = div["ceiling"]
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


def check_failed_rule(failed: Mapping[str, Any]) -> None:
    """`detect.failed`: a loss margin, and held-out metrics only as an explicit, explained opt-in."""
    for old in ("min_acc", "acc_margin"):
        require(failed.get(old) is None, f"detect.failed.{old}", failed.get(old),
                "held-out accuracy no longer judges stability by default; drop it, or opt in with "
                "detect.failed.heldout: {min_acc: X, why: '<reason>'}")
    heldout = failed["heldout"]
    if heldout is not None:
        require(heldout.get("min_acc") is not None, "detect.failed.heldout.min_acc", heldout.get("min_acc"),
                "set the held-out accuracy bar, or drop detect.failed.heldout")
        require(bool(str(heldout.get("why") or "").strip()), "detect.failed.heldout.why", heldout.get("why"),
                "say why held-out accuracy may judge stability for this preset")


def failed_to_train(final_loss: float, l0: float, final_acc: float | None, failed: Mapping[str, Any]) -> bool:
    """The plain rule (docs/definitions.md#failed-to-train): final train loss >= l0 - `loss_margin`.

    Held-out accuracy joins only where a preset opts in with `failed.heldout: {min_acc, why}` (final
    held-out accuracy below `min_acc` also fails); the stricter bars on the training loss are post-hoc
    criteria in warmup_lab.stability, so one set of runs is judged under all of them.
    """
    if not math.isfinite(final_loss) or final_loss >= l0 - float(failed["loss_margin"]):
        return True
    heldout = failed["heldout"]
    if heldout is None or final_acc is None:
        return False
    return final_acc < float(heldout["min_acc"])
