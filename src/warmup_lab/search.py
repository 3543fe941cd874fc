"""Maximum stable LR (DESIGN.md section 2): bracket, then bisect, over log-LR, for one setting and seed.

Pure Python on purpose (no Hydra, no torch): the Hydra sweeper drives many of these state machines in
lock-step rounds, and tests drive them with synthetic objectives.

Every probe sits on one log-grid, lr(k) = start_lr * resolution**k for integer k. Bracketing moves
by m = round(log(bracket_factor) / log(resolution)) grid steps; bisection halves the integer gap
until hi = lo + 1, i.e. hi/lo = resolution exactly. The grid makes every LR reproducible to the last
digit, so a re-run asks for the very same configs (same config hash, same run dirs: resume for free).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

BRACKET_FACTOR = 4.0
RESOLUTION = 2**0.25
MIN_LR = 1e-6
MAX_LR = 10.0
CHECK_ABOVE = 1
ERROR_RETRIES = 1
_EPS = 1e-9


def _grid(start_lr: float, bracket_factor: float, resolution: float, min_lr: float, max_lr: float):
    """(m, kmin, kmax): bracket step and the grid's index range inside [min_lr, max_lr]."""
    if not (resolution > 1 and bracket_factor > 1):
        raise ValueError(f"resolution={resolution!r} and bracket_factor={bracket_factor!r} must both be > 1")
    if not (0 < min_lr <= start_lr <= max_lr):
        raise ValueError(f"need 0 < min_lr <= start_lr <= max_lr, got {min_lr!r}, {start_lr!r}, {max_lr!r}")
    step = math.log(resolution)
    m = max(1, round(math.log(bracket_factor) / step))
    kmin = math.ceil(math.log(min_lr / start_lr) / step - _EPS)
    kmax = math.floor(math.log(max_lr / start_lr) / step + _EPS)
    return m, kmin, kmax


def grid_lr(start_lr: float, resolution: float, k: int) -> float:
    """lr(k), rounded to 10 significant digits so that its text (a Hydra override) is stable."""
    return float(f"{start_lr * resolution ** k:.10g}")


class LRSearch:
    """One search. Call `next_lr()` (None = done), run that LR, `record(lr, stable, **info)`; repeat.

    `stable` is True/False, or None for an error probe (the run crashed: no result). An error probe is
    retried `error_retries` times at the same LR; if it still errs, it counts as unstable and the
    result flags it (`errors_as_unstable`). After bisection, `check_above` extra probes at
    top * bracket_factor**j (top = highest probed LR) look for stable runs above the threshold: a
    pure bracket+bisect never sees non-monotonicity, since every probe it makes is consistent with
    its final bracket.
    """

    def __init__(self, start_lr: float = 1e-3, bracket_factor: float = BRACKET_FACTOR,
                 resolution: float = RESOLUTION, min_lr: float = MIN_LR, max_lr: float = MAX_LR,
                 check_above: int = CHECK_ABOVE, error_retries: int = ERROR_RETRIES):
        self.start_lr, self.resolution = float(start_lr), float(resolution)
        self.min_lr, self.max_lr = float(min_lr), float(max_lr)
        self.m, self.kmin, self.kmax = _grid(self.start_lr, bracket_factor, self.resolution, self.min_lr, self.max_lr)
        self.check_above, self.error_retries = int(check_above), int(error_retries)
        self.probes: list[dict[str, Any]] = []
        self.outcome: dict[int, bool] = {}  # grid index -> stable (errors resolved)
        self._errors: dict[int, int] = {}
        self._phase = "bracket"  # bracket -> bisect -> check -> done
        self._k: int | None = 0  # pending grid index
        self.lo: int | None = None  # largest stable index of the bracket
        self.hi: int | None = None  # smallest unstable index of the bracket
        self._checks: list[int] = []

    # -- the state machine -------------------------------------------------------------------
    def next_lr(self) -> float | None:
        return None if self._k is None else grid_lr(self.start_lr, self.resolution, self._k)

    @property
    def done(self) -> bool:
        return self._k is None

    def record(self, lr: float, stable: bool | None, **info: Any) -> None:
        k = self._k
        if k is None or not math.isclose(lr, grid_lr(self.start_lr, self.resolution, k), rel_tol=1e-9):
            raise ValueError(f"record({lr!r}) does not answer the pending probe {self.next_lr()!r}")
        self.probes.append({"lr": grid_lr(self.start_lr, self.resolution, k), "stable": stable, **info})
        if stable is None:
            self._errors[k] = self._errors.get(k, 0) + 1
            if self._errors[k] <= self.error_retries:
                return  # retry the same LR
            self.probes[-1]["error_as_unstable"] = True
            stable = False
        self.outcome[k] = bool(stable)
        self._advance(k, bool(stable))

    def _advance(self, k: int, stable: bool) -> None:
        if self._phase == "bracket":
            if stable:
                self.lo = k
                if self.hi is not None or k >= self.kmax:  # found the pair (going down), or at max_lr
                    return self._start_bisect()
                self._k = min(k + self.m, self.kmax)
            else:
                self.hi = k
                if self.lo is not None or k <= self.kmin:  # found the pair (going up), or at min_lr
                    return self._start_bisect()
                self._k = max(k - self.m, self.kmin)
        elif self._phase == "bisect":
            if stable:
                self.lo = k
            else:
                self.hi = k
            self._bisect_or_check()
        else:  # check
            self._next_check()

    def _start_bisect(self) -> None:
        self._phase = "bisect"
        self._bisect_or_check()

    def _bisect_or_check(self) -> None:
        if self.lo is not None and self.hi is not None and self.hi - self.lo > 1:
            self._k = (self.lo + self.hi) // 2
            return
        self._phase = "check"
        top = max(self.outcome)
        if self.hi is not None:  # nothing to check above max_lr when every probe was stable
            self._checks = [top + j * self.m for j in range(1, self.check_above + 1) if top + j * self.m <= self.kmax]
        self._next_check()

    def _next_check(self) -> None:
        self._k = self._checks.pop(0) if self._checks else None
        if self._k is None:
            self._phase = "done"

    # -- the answer --------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        """eta_max = lr(lo), the largest stable LR below the first unstable bracket point."""
        lr = lambda k: None if k is None else grid_lr(self.start_lr, self.resolution, k)  # noqa: E731
        odd = []  # probes that contradict a single threshold at eta_max
        for p in self.probes:
            if p["stable"] is None and not p.get("error_as_unstable"):
                continue  # an error that a retry resolved
            k = round(math.log(p["lr"] / self.start_lr) / math.log(self.resolution))
            if (p["stable"] and (self.lo is None or k > self.lo)) or (not p["stable"] and self.lo is not None and k < self.lo):
                odd.append(p)
        return {
            "eta_max": lr(self.lo), "lo": lr(self.lo), "hi": lr(self.hi),
            "below_min": self.lo is None and self.done,  # eta_max < hi = lowest LR of the range
            "above_max": self.hi is None and self.done,  # eta_max >= lo = highest LR of the range
            "done": self.done, "n_probes": len(self.probes),
            "n_errors": sum(p["stable"] is None for p in self.probes),
            "errors_as_unstable": [p["lr"] for p in self.probes if p.get("error_as_unstable")],
            "non_monotone": bool(odd), "non_monotone_probes": odd,
            "probes": list(self.probes),
            "start_lr": self.start_lr, "resolution": self.resolution,
            "bracket_factor": self.resolution ** self.m, "min_lr": self.min_lr, "max_lr": self.max_lr,
            "range": [lr(self.kmin), lr(self.kmax)],
        }


def _bisect_count(gap: int, d: int) -> int:
    """Bisection probes to shrink integer gap `gap` to 1 when the last stable index is lo + d."""
    n = 0
    while gap > 1:
        mid = gap // 2
        if d >= mid:
            gap, d = gap - mid, d - mid
        else:
            gap = mid
        n += 1
    return n


def predicted_probes(threshold: float, start_lr: float = 1e-3, bracket_factor: float = BRACKET_FACTOR,
                     resolution: float = RESOLUTION, min_lr: float = MIN_LR, max_lr: float = MAX_LR,
                     check_above: int = CHECK_ABOVE) -> int:
    """Exact probe count for a monotone objective (stable iff lr <= threshold), no errors.

    With t the last stable grid index (lr(t) <= threshold < lr(t+1)), m the bracket step and the
    range [kmin, kmax]: bracket = (number of moves) + 1, bisection = ceil or floor of log2(gap)
    (exactly log2(m) for the default m = 8 away from the bounds), plus the check probes that fit
    below max_lr. Computed independently of LRSearch so that tests can hold one against the other.
    """
    m, kmin, kmax = _grid(start_lr, bracket_factor, resolution, min_lr, max_lr)
    t = math.floor(math.log(threshold / start_lr) / math.log(resolution) + _EPS)
    if t >= 0:
        if t >= kmax:  # every bracket point stable, up to max_lr
            return math.ceil(kmax / m) + 1
        j = t // m + 1  # first unstable bracket point is min(j*m, kmax)
        lo, hi = (j - 1) * m, min(j * m, kmax)
        top = hi
        n = j + 1
    else:
        if t < kmin:  # every bracket point unstable, down to min_lr
            return math.ceil(-kmin / m) + 1 + _n_checks(0, m, kmax, check_above)
        i = math.ceil(-t / m)  # first stable bracket point going down is -i*m
        lo, hi = max(-i * m, kmin), -(i - 1) * m
        top = 0
        n = i + 1
    return n + _bisect_count(hi - lo, t - lo) + _n_checks(top, m, kmax, check_above)


def _n_checks(top: int, m: int, kmax: int, check_above: int) -> int:
    return sum(top + j * m <= kmax for j in range(1, check_above + 1))


def aggregate(results: dict[Any, dict[str, Any]] | Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Across seeds: per-seed eta_max, median, geometric mean, min, max, spread in resolution units.

    Statistics use the seeds with a value; a seed whose eta_max lies below the range has none, and
    `n_below_min` / `n_above_max` say how many seeds were censored by the range (don't ignore them).
    """
    items = dict(results) if isinstance(results, dict) else dict(enumerate(results))
    values = {s: r["eta_max"] for s, r in items.items()}
    got = [v for v in values.values() if v is not None]
    res = next((r["resolution"] for r in items.values()), RESOLUTION)
    out: dict[str, Any] = {
        "per_seed": values, "n_seeds": len(items), "n_values": len(got),
        "median": statistics.median(got) if got else None,
        "geomean": float(f"{math.exp(statistics.fmean(math.log(v) for v in got)):.10g}") if got else None,
        "min": min(got) if got else None, "max": max(got) if got else None,
        "spread_res": round(math.log(max(got) / min(got)) / math.log(res), 6) if got else None,
        "non_monotone": any(r["non_monotone"] for r in items.values()),
        "n_below_min": sum(bool(r["below_min"]) for r in items.values()),
        "n_above_max": sum(bool(r["above_max"]) for r in items.values()),
        "n_errors": sum(r["n_errors"] for r in items.values()),
        "all_done": all(r["done"] for r in items.values()),
    }
    return out
