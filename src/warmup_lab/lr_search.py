"""Where to probe for the maximum stable LR: bracket, then bisect, over log-LR, for one setting and seed.

The answer itself (eta_max from the probes) is warmup_lab.stability.eta_max_of, the one rule that the
report and the figures apply too (docs/definitions.md#eta-max); this module only chooses the LRs.

Pure Python on purpose (no Hydra, no torch): the Hydra sweeper drives many of these state machines in
lock-step rounds, and tests drive them with synthetic objectives.

Every probe sits on one log-grid, lr(k) = start_lr * resolution**k for integer k. Bracketing moves
by m = round(log(bracket_factor) / log(resolution)) grid steps; bisection halves the integer gap
until hi = lo + 1, i.e. hi/lo = resolution exactly. The grid makes every LR reproducible to the last
digit, so a re-run asks for the very same configs (same config hash, same run dirs: resume for free).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from warmup_lab.stability import eta_max_of

START_LR = 1e-3
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
    result flags it (`errors_as_unstable`). After bisection, `check_above` extra probes at the grid
    points just above the first unstable one (hi * resolution**j, skipping LRs already probed) look
    where seeds disagree: a pure bracket+bisect never sees non-monotonicity, since every probe it
    makes is consistent with its final bracket. `probe_also(lrs)` re-opens a finished search for
    more probes (the sweeper's cross-seed probes, lr_search.disagreement_lrs).

    `hint`: the eta_max another seed of the same setting found. The bracket then starts there and
    gallops (steps of 1, 2, 4, ... grid points) instead of stepping by `bracket_factor` from
    `start_lr`: a seed that agrees with the hint is done in two probes plus the checks.
    """

    def __init__(self, start_lr: float = START_LR, bracket_factor: float = BRACKET_FACTOR,
                 resolution: float = RESOLUTION, min_lr: float = MIN_LR, max_lr: float = MAX_LR,
                 check_above: int = CHECK_ABOVE, error_retries: int = ERROR_RETRIES, hint: float | None = None):
        self.start_lr, self.resolution = float(start_lr), float(resolution)
        self.min_lr, self.max_lr = float(min_lr), float(max_lr)
        self.m, self.kmin, self.kmax = _grid(self.start_lr, bracket_factor, self.resolution, self.min_lr, self.max_lr)
        self.check_above, self.error_retries = int(check_above), int(error_retries)
        self.probes: list[dict[str, Any]] = []
        self.outcome: dict[int, bool] = {}  # grid index -> stable (errors resolved)
        self._errors: dict[int, int] = {}
        self._phase = "bracket"  # bracket -> bisect -> check -> done
        self._k: int | None = 0  # pending grid index
        self._step = self.m  # bracket move in grid steps (doubles after each move when galloping from a hint)
        self._gallop = hint is not None
        if hint is not None:
            self._k, self._step = min(max(self.index(hint), self.kmin), self.kmax), 1
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
                self._k = min(k + self._next_step(), self.kmax)
            else:
                self.hi = k
                if self.lo is not None or k <= self.kmin:  # found the pair (going up), or at min_lr
                    return self._start_bisect()
                self._k = max(k - self._next_step(), self.kmin)
        elif self._phase == "bisect":
            if stable:
                self.lo = k
            else:
                self.hi = k
            self._bisect_or_check()
        else:  # check
            self._next_check()

    def _next_step(self) -> int:
        step = self._step
        if self._gallop:
            self._step *= 2
        return step

    def _start_bisect(self) -> None:
        self._phase = "bisect"
        self._bisect_or_check()

    def _bisect_or_check(self) -> None:
        if self.lo is not None and self.hi is not None and self.hi - self.lo > 1:
            self._k = (self.lo + self.hi) // 2
            return
        self._phase = "check"
        if self.hi is not None:  # nothing to check above max_lr when every probe was stable
            self._checks = [k for k in range(self.hi + 1, self.hi + 1 + self.check_above)
                            if k <= self.kmax and k not in self.outcome]
        self._next_check()

    def probe_also(self, lrs: Sequence[float]) -> None:
        """Queue extra probes at grid LRs not probed yet (a finished search re-opens; order kept)."""
        ks = [self.index(lr) for lr in lrs]
        new = [k for k in dict.fromkeys(ks) if k not in self.outcome and k not in self._checks
               and self.kmin <= k <= self.kmax and k != self._k]
        if not new:
            return
        self._checks += new
        if self._k is None:
            self._phase = "check"
            self._next_check()

    def index(self, lr: float) -> int:
        """The grid index of `lr` (which must lie on the grid)."""
        k = round(math.log(lr / self.start_lr) / math.log(self.resolution))
        if not math.isclose(lr, grid_lr(self.start_lr, self.resolution, k), rel_tol=1e-9):
            raise ValueError(f"lr={lr!r} is not on the search grid start_lr * resolution**k")
        return k

    def _next_check(self) -> None:
        self._k = self._checks.pop(0) if self._checks else None
        if self._k is None:
            self._phase = "done"

    # -- the answer --------------------------------------------------------------------------
    def resolved_probes(self) -> list[dict[str, Any]]:
        """Probes with an answer: errors a retry resolved are dropped, errors kept after retries are unstable."""
        return [{**p, "stable": bool(p["stable"])} for p in self.probes
                if p["stable"] is not None or p.get("error_as_unstable")]

    def result(self) -> dict[str, Any]:
        """eta_max by stability.eta_max_of over this seed's resolved probes (None when censored below)."""
        lr = lambda k: None if k is None else grid_lr(self.start_lr, self.resolution, k)  # noqa: E731
        probes = self.resolved_probes()
        rule = eta_max_of([p["lr"] for p in probes], [p["stable"] for p in probes])
        none = lambda v: None if v is None or math.isnan(v) else v  # noqa: E731
        hi = none(rule["hi"])
        lowest = min((p["lr"] for p in probes if p["stable"]), default=None)
        odd = [p for p in probes if (p["stable"] and hi is not None and p["lr"] > hi)  # stable above the edge
               or (not p["stable"] and lowest is not None and p["lr"] < lowest)]  # unstable below every stable
        return {
            "eta_max": none(rule["eta_max"]), "lo": none(rule["lo"]), "hi": hi, "censored": rule["censored"],
            "below_min": rule["censored"] == "below" and self.done,  # eta_max < hi = lowest LR probed
            "above_max": rule["censored"] == "above" and self.done,  # eta_max >= lo = highest LR probed
            "done": self.done, "n_probes": len(self.probes),
            "n_errors": sum(p["stable"] is None for p in self.probes),
            "errors_as_unstable": [p["lr"] for p in self.probes if p.get("error_as_unstable")],
            "non_monotone": rule["non_monotone"],
            "non_monotone_probes": odd,
            "probes": list(self.probes),
            "start_lr": self.start_lr, "resolution": self.resolution,
            "bracket_factor": self.resolution ** self.m, "min_lr": self.min_lr, "max_lr": self.max_lr,
            "range": [lr(self.kmin), lr(self.kmax)],
        }


def disagreement_lrs(results: Sequence[dict[str, Any]]) -> list[list[float]]:
    """Per seed: the median seed's bracket (its lo and hi) where this seed has not probed it.

    Where the seeds of one setting disagree on the edge, every seed is probed at the edge the median
    seed found (the lower median over seeds' lo; censored seeds rank at their end), so P(stable | LR)
    around the aggregate eta_max rests on every seed: at most two probes per seed, none when seeds agree.
    """
    ranked = sorted(results, key=lambda r: (r["lo"] is not None, r["lo"] or 0.0, r["hi"] is None))
    mid = ranked[(len(ranked) - 1) // 2]
    edges = [v for v in (mid["lo"], mid["hi"]) if v is not None]
    return [[v for v in edges if not any(math.isclose(v, p["lr"], rel_tol=1e-9) for p in r["probes"])]
            for r in results]


def predicted_probes(threshold: float, start_lr: float = START_LR, bracket_factor: float = BRACKET_FACTOR,
                     resolution: float = RESOLUTION, min_lr: float = MIN_LR, max_lr: float = MAX_LR,
                     check_above: int = CHECK_ABOVE) -> int:
    """Exact probe count for a monotone objective (stable iff lr <= threshold), no errors.

    With t the last stable grid index (lr(t) <= threshold < lr(t+1)), m the bracket step and the
    range [kmin, kmax]: bracket = (number of moves) + 1, bisection = ceil or floor of log2(gap)
    (exactly log2(m) for the default m = 8 away from the bounds), plus the check probes at
    t+2 .. t+1+check_above that are not probed yet and fit below max_lr. Computed independently of
    LRSearch (sets of grid indices, not a state machine) so that tests can hold one against the other.
    """
    m, kmin, kmax = _grid(start_lr, bracket_factor, resolution, min_lr, max_lr)
    t = math.floor(math.log(threshold / start_lr) / math.log(resolution) + _EPS)
    if t >= kmax:  # every bracket point stable, up to max_lr: no unstable LR, no check
        return math.ceil(kmax / m) + 1
    if t < kmin:  # every bracket point unstable, down to min_lr; checks just above the lowest
        path = set(range(0, kmin, -m)) | {kmin}
        return len(path) + _n_checks(kmin, path, kmax, check_above)
    if t >= 0:
        j = t // m + 1  # first unstable bracket point is min(j*m, kmax)
        lo, hi = (j - 1) * m, min(j * m, kmax)
        path = set(range(0, lo + 1, m)) | {hi}
    else:
        i = math.ceil(-t / m)  # first stable bracket point going down is -i*m
        lo, hi = max(-i * m, kmin), -(i - 1) * m
        path = set(range(0, hi - 1, -m)) | {lo}
    probed = path | set(_bisect_points(lo, hi, t))
    return len(probed) + _n_checks(t + 1, probed, kmax, check_above)


def _bisect_points(lo: int, hi: int, t: int) -> list[int]:
    """The indices bisection probes between bracket points lo < hi when the last stable index is t."""
    out = []
    while hi - lo > 1:
        mid = (lo + hi) // 2
        out.append(mid)
        lo, hi = (mid, hi) if mid <= t else (lo, mid)
    return out


def _n_checks(hi: int, probed: set[int], kmax: int, check_above: int) -> int:
    """Check probes just above the first unstable index hi that are not already probed."""
    return sum(k <= kmax and k not in probed for k in range(hi + 1, hi + 1 + check_above))


class Budget:
    """What a search may spend: runs (`max_probes`) and/or core-seconds (`max_core_s`); None = no limit.

    A round of probes starts only if it fits: its runs counted exactly, its core-seconds estimated at
    the mean cost of the probes so far. Every probe counts, a resumed one at the cost its summary
    recorded, so a re-run with the same budget makes the same probes and a larger budget extends them.
    """

    def __init__(self, max_probes: int | None = None, max_core_s: float | None = None):
        if max_probes is not None and int(max_probes) < 1:
            raise ValueError(f"max_probes={max_probes!r} must be >= 1 (or null: no limit)")
        if max_core_s is not None and not float(max_core_s) > 0:
            raise ValueError(f"max_core_s={max_core_s!r} must be > 0 (or null: no limit)")
        self.max_probes = None if max_probes is None else int(max_probes)
        self.max_core_s = None if max_core_s is None else float(max_core_s)
        self.probes, self.core_s = 0, 0.0

    def spend(self, core_s: float | None) -> None:
        self.probes += 1
        self.core_s += core_s if core_s is not None and math.isfinite(core_s) else 0.0

    def allows(self, n: int) -> bool:
        """True when `n` more probes fit in the budget."""
        if self.max_probes is not None and self.probes + n > self.max_probes:
            return False
        mean = self.core_s / self.probes if self.probes else 0.0
        return self.max_core_s is None or self.core_s + n * mean <= self.max_core_s

    def as_dict(self) -> dict[str, Any]:
        return {"probes": self.probes, "core_s": self.core_s, "max_probes": self.max_probes,
                "max_core_s": self.max_core_s}

    def text(self) -> str:
        runs = f"{self.probes}" + (f" of {self.max_probes}" if self.max_probes is not None else "") + " runs"
        cost = f"{self.core_s:.0f}" + (f" of {self.max_core_s:.0f}" if self.max_core_s is not None else "")
        return f"{runs}, {cost} core-s"
