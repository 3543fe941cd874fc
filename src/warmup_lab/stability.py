"""Stability criteria, the one eta_max rule, and its statistics over seeds (docs/definitions.md).

The one module that owns them, and the files they are written to: the trainer writes the plain-rule
status, and the sweeper, the report and the figures all call these functions on the same run summaries.

API (names other code relies on; columns may be added, never renamed):
  DEFAULT_CRITERIA                  ("learned_0.9", "plain", "loss_frac_0.65", "loss_frac_0.5");
                                    DEFAULT_CRITERION "learned_0.9" (requires learning; steers searches and advise)
  baseline_of(summary) -> float     the task's declared baseline_loss in a run summary (NaN: none)
  criterion(name) -> Criterion      "learned_<f>", "plain", "loss_frac_<f>", "near_best_<k>", "not_diverged"; `.text` is the
                                    one-line definition (criteria_text(names) joins them for a table)
  probes_from_runs(df, keys=None)   run summaries (report.load_runs rows) -> probe rows (keys, seed, lr, ...)
  judge(probes, criteria, keys)     one row per (probe, criterion) with a bool `stable`
  eta_max_of(lrs, stable) -> dict   the rule for one (setting, seed): eta_max, lo, hi, censored, non_monotone
  eta_max_per_seed(judged, keys)    ETA_COLUMNS       (eta_max.csv)
  eta_max_summary(per_seed, keys, level=0.9)   SUMMARY_COLUMNS (eta_max_summary.csv): median, exact order-statistic interval
  median_and_range(per_seed) -> dict   one setting's median and seed range (min, max), censoring flagged
  p_stable(judged, keys)            P_STABLE_COLUMNS  (p_stable.csv), with its Wilson interval (p_low, p_high)
  wilson(k, n, level=0.9)           Wilson score interval of a binomial proportion
  compare(per_seed, keys, vary=VARY, baseline={"warmup_steps": 0}, declared=None, one_arm=(), source_runs=None)
                                    COMPARE_COLUMNS (eta_max_compare.csv): exact tests, Holm, a verdict per row
  ratio(per_seed_a, per_seed_b) -> dict   eta_max(b) / eta_max(a): Hodges-Lehmann, exact interval, exact p
  median_interval, median_rank, shift_test, mann_whitney_exact, signed_rank_exact, holm   the exact statistics
  lr50(lrs, stable) / lr50_table    LR50 of a logistic fit of P(stable | log LR), profile interval
  declared(experiment) -> Declared  the preset's `comparisons:` and `selected_from:`
  one_arm_pairs(curves), reused_seeds(claim, source)   identical LR curves; seeds shared with a selection
  lr_sensitivity(lrs, final, init)  one setting's value (Wortsman et al.)
  lr_sensitivity_table(probes, keys, grid=None)   raises GridMismatch when settings' LR grids differ
  tables(probes, keys, criteria=DEFAULT_CRITERIA, ..., declared, one_arm, source_runs) -> {file name: DataFrame};
  write_tables(out_dir, tables);
  read_table(path)                  a written table back, censoring flags as "" (not NaN)
`keys` = the columns that identify a setting; default: those of SETTING_KEYS present in the frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from warmup_lab import runs
from warmup_lab.summary import SETTING_KEYS

ETA_FILE, SUMMARY_FILE, P_STABLE_FILE = "eta_max.csv", "eta_max_summary.csv", "p_stable.csv"
COMPARE_FILE, SENSITIVITY_FILE = "eta_max_compare.csv", "lr_sensitivity.csv"
BEST_LR_FILE = "best_lr.csv"  # per setting: the LR with the lowest median final training loss, and its place in the grid
LOSS_COMPARE_FILE = "final_loss_compare.csv"  # declared comparisons of the final training loss (compare_on)
MEASURES = ("eta_max", "final_train_loss")  # what a preset's `compare_on:` may name
ETA_COLUMNS = ["criterion", "seed", "eta_max", "lo", "hi", "censored", "n_probes", "non_monotone", "n_unstable_below"]
SUMMARY_COLUMNS = ["criterion", "n_seeds", "n_censored_below", "n_censored_above", "censored_seeds",
                   "estimate", "estimate_censored", "ci_low", "ci_high", "ci_level", "n_probes",
                   "ci_low_censored", "ci_high_censored", "ci_coverage", "interval"]
P_STABLE_COLUMNS = ["criterion", "lr", "n", "n_stable", "p_stable", "p_low", "p_high"]
COMPARE_COLUMNS = ["criterion", "baseline", "n_seeds", "n_seeds_baseline", "ratio", "ratio_censored", "ci_low",
                   "ci_high", "ci_level", "resolved", "ci_low_censored", "ci_high_censored", "ci_coverage",
                   "interval", "test", "paired", "n_undetermined", "p_value", "p_holm", "declared", "one_arm",
                   "reused_seeds", "verdict"]
CI_LEVEL = 0.9
FLOAT_FORMAT = None  # floats as repr: the shortest text that reads back (float_precision="round_trip") exactly
VARY = ("warmup", "warmup_steps")  # what compare() varies against its no-warmup baseline
BASELINE_COLUMN = "task_info.baseline_loss"  # where report.load_runs puts a task's declared baseline_loss


# -- criteria --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """A named stability criterion. `kind` plain | loss_frac | near_best | not_diverged; `value` its f or k."""

    name: str
    kind: str
    value: float | None
    text: str


def criterion(name: str) -> Criterion:
    """"plain", "loss_frac_<f>" (0 < f < 1), "near_best_<k>" (k >= 1) or the looser "not_diverged"."""
    if name == "not_diverged":
        return Criterion(name, "not_diverged", None, "not_diverged: finished without diverging (looser than plain: "
                                                     "a run that learned nothing counts as stable)")
    if m := re.fullmatch(r"learned_([0-9.]+)", str(name)):
        f = float(m.group(1)) if re.fullmatch(r"\d+(\.\d+)?|\.\d+", m.group(1)) else 0.0
        if 0 < f <= 1:
            return Criterion(name, "learned", f, f"{name}: plain, and final train loss <= {f:g} x the task's "
                             "baseline_loss (the loss of the best input-blind predictor: the class prior's entropy "
                             "for a classifier, the text's unigram entropy for a char-LM; l0 where a task declares none)")
    if name == "plain":
        return Criterion(name, "plain", None, "plain: status `completed` (not diverged; final train loss < l0 - "
                                              "loss_margin, and the preset's held-out bar if it opted in)")
    m = re.fullmatch(r"(loss_frac|near_best)_([0-9.]+)", str(name))
    value = float(m.group(2)) if m and re.fullmatch(r"\d+(\.\d+)?|\.\d+", m.group(2)) else None
    if m and value is not None and m.group(1) == "loss_frac" and 0 < value < 1:
        return Criterion(name, "loss_frac", value, f"{name}: plain, and final train loss <= {value:g} x l0")
    if m and value is not None and m.group(1) == "near_best" and value >= 1:
        return Criterion(name, "near_best", value,
                         f"{name}: plain, and final train loss <= {value:g} x the best final train loss of "
                         "the same setting (over all its runs: every LR, every seed)")
    raise ValueError(f"criterion={name!r}: use learned_<f> with 0 < f <= 1, plain, loss_frac_<f> with 0 < f < 1, "
                     "near_best_<k> with k >= 1, or not_diverged")


# The criteria every report and search tabulates side by side, unless told otherwise (the report's --criteria,
# the search's hydra.sweeper.criteria): learned_0.9 against the task's own baseline_loss; loss_frac_0.65 sits just
# below the char-LM's unigram entropy (0.69 l0: learned more than character frequencies), loss_frac_0.5 is the
# stricter bar that the image arm's trained runs clear by far.
# The one a max-stable-LR search and advise steer by, unless told otherwise, requires learning: `plain` alone
# counts a run that ends just below l0 (learned nothing) as stable, and a search steered by it can report an
# edge where nothing trains.
DEFAULT_CRITERION = "learned_0.9"
DEFAULT_CRITERIA = (DEFAULT_CRITERION, "plain", "loss_frac_0.65", "loss_frac_0.5")


def criteria_text(names: Iterable[str]) -> str:
    """The one-line definitions, printed with every table."""
    return "; ".join(criterion(n).text for n in names) + "."


# -- probes ----------------------------------------------------------------------------------------
def setting_keys(df: pd.DataFrame) -> list[str]:
    """The SETTING_KEYS columns a frame has (with a value somewhere): what identifies its settings."""
    return [k for k in SETTING_KEYS if k in df.columns and df[k].notna().any()]


def probes_from_runs(df: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Finished runs (report.load_runs rows) as probes: setting keys, `seed`, `lr` (= target_lr), status,
    init_loss, final_train_loss, final_eval_loss. Runs that ended in `error` are not probes."""
    keys = list(keys) if keys is not None else setting_keys(df)
    done = df[df["status"].isin(runs.FINISHED_STATUSES)]
    out = done.reindex(columns=[*keys, "seed", "target_lr", "status", "init_loss", "final_train_loss",
                                "final_eval_loss", BASELINE_COLUMN]).rename(
        columns={"target_lr": "lr", BASELINE_COLUMN: "baseline_loss"})
    out = out.dropna(subset=["lr"])
    for col in ("lr", "init_loss", "final_train_loss", "final_eval_loss", "baseline_loss"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in [*keys, "seed"]:  # 10.0 -> 10: a column of whole numbers (seeds, lengths) reads as such
        num = pd.to_numeric(out[col], errors="coerce")
        if len(out) and num.notna().all() and (num % 1 == 0).all():
            out[col] = num.astype(int)
    return out.reset_index(drop=True)


def baseline_of(summary: dict[str, Any] | None) -> float:
    """The baseline_loss a run's task declared (tasks/base.py Task.baseline_loss), NaN when none."""
    value = ((summary or {}).get("task_info") or {}).get("baseline_loss")
    return float(value) if isinstance(value, (int, float)) else math.nan


def _groups(df: pd.DataFrame, by: Sequence[str]):
    """groupby that keeps NaN keys and always yields tuples."""
    if not by:
        yield (), df
        return
    for values, g in df.groupby(list(by), dropna=False, sort=True):
        yield (values if isinstance(values, tuple) else (values,)), g


def judge(probes: pd.DataFrame, criteria: Sequence[str] = DEFAULT_CRITERIA,
          keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (probe, criterion) with `stable`; every criterion reads the same probes."""
    keys = list(keys) if keys is not None else setting_keys(probes)
    plain = probes["status"].eq(runs.COMPLETED)
    final = pd.to_numeric(probes["final_train_loss"], errors="coerce")
    l0 = pd.to_numeric(probes["init_loss"], errors="coerce")
    best = final.where(plain).groupby([probes[k].astype(str) for k in keys] or [np.zeros(len(probes))]
                                      ).transform("min") if len(probes) else final
    frames = []
    for name in criteria:
        c = criterion(name)
        if c.kind == "plain":
            stable = plain
        elif c.kind == "not_diverged":
            stable = probes["status"].isin([runs.COMPLETED, runs.FAILED])
        elif c.kind == "learned":
            base = (pd.to_numeric(probes["baseline_loss"], errors="coerce") if "baseline_loss" in probes
                    else pd.Series(np.nan, index=probes.index))
            stable = plain & (final <= c.value * base.fillna(l0))
        elif c.kind == "loss_frac":
            stable = plain & (final <= c.value * l0)
        else:
            stable = plain & (final <= c.value * best)
        frames.append(probes.assign(criterion=c.name, stable=stable.fillna(False).astype(bool)))
    return pd.concat(frames, ignore_index=True) if frames else probes.assign(criterion=[], stable=[])


# -- the eta_max rule ------------------------------------------------------------------------------
def eta_max_of(lrs: Iterable[float], stable: Iterable[bool]) -> dict[str, Any]:
    """eta_max = the largest stable LR below the first unstable LR above the smallest stable one.

    Probes sorted by LR; an LR probed more than once is stable only if every probe of it was. Unstable
    LRs below every stable one are the "too slow for the bar" side (a loss-based bar fails a tiny LR
    that has not trained yet), not an edge of stability: they are counted (`n_unstable_below`) and
    flag `non_monotone`, as does a stable LR above hi. `censored`: "below" = no stable LR at all
    (eta_max NaN; hi = the smallest LR probed), "above" = no unstable LR above the
    smallest stable one (eta_max = lo = the largest LR probed; the truth is >= it).
    """
    by_lr: dict[float, bool] = {}
    n = 0
    for lr, ok in zip(lrs, stable):
        by_lr[float(lr)] = by_lr.get(float(lr), True) and bool(ok)
        n += 1
    order = sorted(by_lr)
    good = [lr for lr in order if by_lr[lr]]
    if not good:
        return {"eta_max": math.nan, "lo": math.nan, "hi": order[0] if order else math.nan,
                "censored": "below", "n_probes": n, "non_monotone": False, "n_unstable_below": len(order)}
    below = sum(not by_lr[lr] for lr in order if lr < good[0])
    first_bad = next((lr for lr in order if lr > good[0] and not by_lr[lr]), None)
    lo = max(lr for lr in good if first_bad is None or lr < first_bad)
    hi = first_bad if first_bad is not None else math.nan
    above = first_bad is not None and any(lr > first_bad for lr in good)
    return {"eta_max": lo, "lo": lo, "hi": hi, "censored": "" if first_bad is not None else "above",
            "n_probes": n, "non_monotone": bool(above or below), "n_unstable_below": below}


def eta_max_per_seed(judged: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (setting, criterion, seed): eta_max_of over every probe of that seed."""
    keys = list(keys) if keys is not None else setting_keys(judged)
    rows = [{**dict(zip([*keys, "criterion", "seed"], values)), **eta_max_of(g["lr"], g["stable"])}
            for values, g in _groups(judged, [*keys, "criterion", "seed"])]
    return pd.DataFrame(rows, columns=[*keys, *ETA_COLUMNS])


# -- statistics over seeds -------------------------------------------------------------------------
# A censored seed enters at its bound (below: hi, the smallest LR probed; above: lo, the largest) with a
# flag (-1 below, +1 above). Every seed shares the LR range, so the bound keeps its rank among the seeds,
# and a median (unlike a mean) needs no guess of where it lies: it is censored only when its middle
# value(s) are. Flags: 0 exact, -1 "<" (an upper bound), +1 ">=" (a lower bound), 2 undetermined.
_TIE = 1e-9  # log-LR nudge that orders a censored bound beyond an exact value at the same LR
CENSOR_TEXT = {0: "", -1: "below", 1: "above", 2: "undetermined"}


def _log_values(per_seed: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(log eta_max with censored seeds at their bound, flag per seed)."""
    below, above = per_seed["censored"].eq("below").to_numpy(), per_seed["censored"].eq("above").to_numpy()
    lr = pd.to_numeric(per_seed["eta_max"], errors="coerce").to_numpy(dtype=float)
    lr[below] = pd.to_numeric(per_seed["hi"], errors="coerce").to_numpy(dtype=float)[below]
    return np.log(lr), above.astype(int) - below.astype(int)


def _medians(vals: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise median of log values and its flag (see above)."""
    order = np.argsort(vals + _TIE * flags, axis=-1, kind="stable")
    v, f = np.take_along_axis(vals, order, -1), np.take_along_axis(flags, order, -1)
    n = v.shape[-1]
    if n % 2:
        return v[..., n // 2], f[..., n // 2]
    a, b, fa, fb = v[..., n // 2 - 1], v[..., n // 2], f[..., n // 2 - 1], f[..., n // 2]
    flag = np.where((fa == 0) & (fb == 0), 0, np.where((fa <= 0) & (fb <= 0), -1, np.where((fa >= 0) & (fb >= 0), 1, 2)))
    return (a + b) / 2, flag


def _lr(x: float) -> float:
    """exp of a log-LR at 10 significant digits, as the search grid writes LRs (exp(log(lr)) == lr)."""
    return math.nan if math.isnan(x) else float(f"{math.exp(x):.10g}")


# -- exact statistics over seeds --------------------------------------------------------------------
# No random resampling anywhere: every interval is an order statistic whose coverage is computed exactly
# from a rank distribution, and every test enumerates its null distribution (docs/definitions.md#statistics).
ALPHA = 0.05      # two-sided level of the tests: a declared comparison is resolved when its Holm p <= ALPHA
MIN_SEEDS = 3     # seeds needed on each side before a comparison may be resolved
def bound_text(x: Any, censored: str = "") -> str:
    """An LR or ratio to 3 significant digits, `< ` / `>= ` when censored (an upper / lower bound), `?` when
    undetermined, `-` when missing: the one way every table and report prints a value that may be a bound."""
    x = float(x)
    if censored == "undetermined" or math.isnan(x):
        return "?" if censored == "undetermined" else "-"
    return {"below": "< ", "above": ">= "}.get(censored, "") + f"{x:.3g}"


INTERVAL_TEXT = "exact order-statistic"  # the name every table header and figure label uses for an interval
VERDICTS = ("resolved", "not resolved", "too few seeds", "exploratory", "one arm", "seeds reused")


def _subset_sums(scores: Sequence[int], size: int | None = None) -> np.ndarray:
    """Number of subsets of `scores` (non-negative integers) with each total: of exactly `size` elements, or
    of any size when `size` is None (the sign-flip distribution). A 0/1 knapsack count, exact in float64."""
    total = int(sum(scores))
    if size is None:
        c = np.zeros(total + 1)
        c[0] = 1.0
        for s in scores:
            c[s:] = c[s:] + c[:total + 1 - s]
        return c
    c = np.zeros((size + 1, total + 1))
    c[0, 0] = 1.0
    for s in scores:
        c[1:, s:] = c[1:, s:] + c[:-1, :total + 1 - s]
    return c[size]


def _doubled_midranks(keys: np.ndarray) -> np.ndarray:
    """2 x the midrank of each key (ties share the mean of their ranks): integers, so counts stay exact."""
    order = np.argsort(keys, kind="stable")
    ranks = np.empty(len(keys), dtype=np.int64)
    sorted_keys = keys[order]
    i = 0
    while i < len(keys):
        j = i
        while j + 1 < len(keys) and sorted_keys[j + 1] == sorted_keys[i]:
            j += 1
        ranks[order[i:j + 1]] = i + j + 2  # 2 x mean of the 1-based ranks i+1 .. j+1
        i = j + 1
    return ranks


def _rank_key(vals: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """The total order of censored values: a bound sorts just beyond an exact value at the same LR."""
    return np.round(vals + _TIE * flags, 12)


def mann_whitney_exact(a_key: np.ndarray, b_key: np.ndarray) -> float:
    """Two-sided exact p of the rank-sum test (ties by midranks, the permutation distribution of the pooled
    ranks): the share of all C(n_a + n_b, n_b) relabellings whose rank sum lies as far from its mean."""
    pooled = np.concatenate([a_key, b_key])
    n, nb = len(pooled), len(b_key)
    if not len(a_key) or not nb:
        return math.nan
    scores = _doubled_midranks(pooled)
    counts = _subset_sums(scores.tolist(), nb)
    t = np.arange(len(counts))
    dev = np.abs(n * t - nb * int(scores.sum()))          # n x |W - E[W]|, in integers
    observed = abs(n * int(scores[len(a_key):].sum()) - nb * int(scores.sum()))
    return float(counts[dev >= observed].sum() / counts.sum())


def signed_rank_exact(d: np.ndarray) -> float:
    """Two-sided exact p of Wilcoxon's signed-rank test on paired differences (zeros dropped, ties in |d| by
    midranks): the share of the 2^n sign flips whose positive-rank sum lies as far from its mean."""
    d = d[d != 0]
    if not len(d):
        return 1.0
    scores = _doubled_midranks(np.round(np.abs(d), 12))
    counts = _subset_sums(scores.tolist())
    total = int(scores.sum())
    dev = np.abs(2 * np.arange(len(counts)) - total)
    observed = abs(2 * int(scores[d > 0].sum()) - total)
    return float(counts[dev >= observed].sum() / counts.sum())


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values over one family (NaN entries are not in the family, stay NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _order_rank(cdf: np.ndarray, m: int, level: float) -> tuple[int, float]:
    """(k, coverage) of the interval [D_(k), D_(m+1-k)] between order statistics of m sorted values, where
    cdf[j] = P(S <= j) for the exact null distribution of the rank statistic S behind it: its coverage is
    1 - 2 P(S <= k-1); k is the largest with coverage >= level, or 1 (the full range, with its lower
    coverage) when even that falls short."""
    k = 1
    while k + 1 <= (m + 1) // 2 and 1 - 2 * cdf[k] >= level - 1e-12:
        k += 1
    return k, float(1 - 2 * cdf[k - 1]) if k >= 2 else float(1 - 2 * cdf[0])


def median_rank(n: int, level: float = CI_LEVEL) -> tuple[int, float]:
    """(k, coverage) of the median's order-statistic interval [x_(k), x_(n+1-k)] over n seeds: the number of
    seeds below the median is Binomial(n, 1/2), so the coverage is exact for any continuous distribution
    (n = 5 at 90%: the seed range, 93.75%; n <= 4 cannot reach 90%: the range, with its coverage)."""
    pmf = np.array([math.comb(n, i) for i in range(n + 1)], dtype=float) / 2.0 ** n
    return _order_rank(np.cumsum(pmf), n, level)


def _kth(vals: np.ndarray, flags: np.ndarray, k: int, low: bool) -> tuple[float, int]:
    """The k-th smallest (low) or k-th largest value with its flag; an undetermined value (flag 2) sorts at
    -inf for a low edge and +inf for a high one, so an edge that lands on it is undetermined (NaN, 2)."""
    und = flags == 2
    key = np.where(und, -np.inf if low else np.inf, vals + _TIE * np.where(und, 0, flags))
    order = np.argsort(key, kind="stable")
    i = order[k - 1] if low else order[len(order) - k]
    return (math.nan, 2) if und[i] else (float(vals[i]), int(flags[i]))


def median_interval(vals: np.ndarray, flags: np.ndarray, level: float = CI_LEVEL) -> tuple[float, int, float, int, float]:
    """(low, its flag, high, its flag, exact coverage): the order-statistic interval of the median."""
    if not len(vals):
        return math.nan, 2, math.nan, 2, math.nan
    k, coverage = median_rank(len(vals), level)
    return (*_kth(vals, flags, k, True), *_kth(vals, flags, k, False), coverage)


def _sum_flag(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Flag of a sum (or mean) of two flagged values: a bound in one direction stays one; opposite: undetermined."""
    up, down = (f1 == 1) | (f2 == 1), (f1 == -1) | (f2 == -1)
    return np.where((f1 == 2) | (f2 == 2) | (up & down), 2, np.where(up, 1, np.where(down, -1, 0)))


def _sign(d: np.ndarray, f: np.ndarray) -> np.ndarray:
    """+1 / -1 where a (possibly censored) difference has a known sign, 0 for an exact tie, NaN unknown
    (shift_test adds the known signs of censored ties at one LR)."""
    pos = (d > 0) & np.isin(f, (0, 1))
    neg = (d < 0) & np.isin(f, (0, -1))
    return np.where(pos, 1.0, np.where(neg, -1.0, np.where((d == 0) & (f == 0), 0.0, np.nan)))


def shift_test(a: pd.DataFrame, b: pd.DataFrame, level: float = CI_LEVEL) -> dict[str, Any]:
    """log eta_max(b) - log eta_max(a) over seeds: a Hodges-Lehmann estimate, its exact distribution-free
    interval, and a two-sided exact test. Paired by seed when both sides hold the same seeds (Walsh
    averages + Wilcoxon signed-rank; the exact sign test when a difference is a censored bound, whose
    size then is unknown), else unpaired (pairwise differences + Mann-Whitney). Censored values keep
    their flags (see `_log_values`): an interval edge or estimate that rests on a bound is one."""
    (va, fa), (vb, fb) = _log_values(a), _log_values(b)
    paired = len(a) > 0 and sorted(a["seed"].tolist()) == sorted(b["seed"].tolist())
    if not len(va) or not len(vb):
        return {"paired": paired, "test": "", "p_value": math.nan, "n_undetermined": 0,
                "shift": (math.nan, 2), "ci": (math.nan, 2, math.nan, 2), "ci_coverage": math.nan}
    if paired:
        ia, ib = np.argsort(a["seed"].to_numpy(), kind="stable"), np.argsort(b["seed"].to_numpy(), kind="stable")
        d, f = vb[ib] - va[ia], _sum_flag(fb[ib], _neg(fa[ia]))
        i, j = np.triu_indices(len(d))
        values, vflags = (d[i] + d[j]) / 2, _sum_flag(f[i], f[j])  # Walsh averages
        null = _subset_sums(list(range(1, len(d) + 1)))
        signs = _sign(d, f)
        # At the same LR, "below" (nothing stable there) is strictly under an exact value or "above" (stable
        # there): that sign is known, though d = 0 (a one-LR experiment: one setting stable, the other not).
        a_below, b_below = fa[ia] == -1, fb[ib] == -1
        signs = np.where((d == 0) & a_below & ~b_below, 1.0, np.where((d == 0) & b_below & ~a_below, -1.0, signs))
        known = ~np.isnan(signs)
        if (f[known] == 0).all():
            test, p = "Wilcoxon signed-rank (paired)", signed_rank_exact(d[known])
        else:  # all |d| tied: the signed-rank count of the signs alone is the exact sign test
            test, p = "sign test (paired; censored differences)", signed_rank_exact(signs[known])
        n_und = int((~known).sum())
    else:
        values = (vb[None, :] - va[:, None]).ravel()
        vflags = _sum_flag(np.repeat(_neg(fa), len(vb)), np.tile(fb, len(va)))
        n = len(va) + len(vb)
        null = _subset_sums(list(range(1, n + 1)), len(vb))[len(vb) * (len(vb) + 1) // 2:]
        test, p = "Mann-Whitney (unpaired)", mann_whitney_exact(_rank_key(va, fa), _rank_key(vb, fb))
        n_und = 0
    k, coverage = _order_rank(np.cumsum(null) / null.sum(), len(values), level)
    est, est_f = _flagged_median(values, vflags)
    return {"paired": paired, "test": test, "p_value": p, "n_undetermined": n_und, "shift": (float(est), int(est_f)),
            "ci": (*_kth(values, vflags, k, True), *_kth(values, vflags, k, False)), "ci_coverage": coverage}


def _neg(f: np.ndarray) -> np.ndarray:
    """Flag of -x: a lower bound becomes an upper one; undetermined stays."""
    return np.where(f == 2, 2, -f)


def _flagged_median(values: np.ndarray, flags: np.ndarray) -> tuple[float, int]:
    """Median of flagged values; undetermined members are tried at both ends: if the median moves, it is
    undetermined (NaN, 2)."""
    und = flags == 2
    if not und.any():
        m, f = _medians(values[None, :], flags[None, :])
        return float(m[0]), int(f[0])
    big = float(np.nanmax(np.abs(values[~und]))) + 1e6 if (~und).any() else 1e6
    ends = [_medians(np.where(und, s * big, values)[None, :], np.where(und, s, flags)[None, :]) for s in (-1, 1)]
    (m1, f1), (m2, f2) = [(float(m[0]), int(f[0])) for m, f in ends]
    return (m1, f1) if (m1, f1) == (m2, f2) else (math.nan, 2)


def _stats_row(ci: tuple[float, int, float, int], est: tuple[float, int], level: float, coverage: float) -> dict[str, Any]:
    return {"ci_low": _lr(ci[0]), "ci_high": _lr(ci[2]), "ci_level": level, "ci_coverage": round(coverage, 6),
            "ci_low_censored": CENSOR_TEXT[ci[1]], "ci_high_censored": CENSOR_TEXT[ci[3]],
            "interval": INTERVAL_TEXT, "_est": est}


def eta_max_summary(per_seed: pd.DataFrame, keys: Sequence[str] | None = None, level: float = CI_LEVEL) -> pd.DataFrame:
    """Per (setting, criterion): the median of eta_max over seeds on log-LR (censored seeds at their bound,
    flagged) and its exact order-statistic interval (`median_interval`; `ci_coverage` = its exact coverage,
    below `ci_level` only where too few seeds: read `n_seeds`).

    `estimate_censored` / `ci_low_censored` / `ci_high_censored`: "below" = the value is an upper bound
    ("<"), "above" = a lower bound (">="), "undetermined" = censored both ways (value NaN).
    """
    keys = list(keys) if keys is not None else setting_keys(per_seed)
    rows = []
    for values, g in _groups(per_seed, [*keys, "criterion"]):
        v, f = _log_values(g)
        est, est_f = _flagged_median(v, f)
        lo, lo_f, hi, hi_f, coverage = median_interval(v, f, level)
        censored = g[g["censored"].ne("")]
        stats = _stats_row((lo, lo_f, hi, hi_f), (est, est_f), level, coverage)
        stats.pop("_est")
        rows.append({**dict(zip([*keys, "criterion"], values)), "n_seeds": len(g),
                     "n_censored_below": int(g["censored"].eq("below").sum()),
                     "n_censored_above": int(g["censored"].eq("above").sum()),
                     "censored_seeds": " ".join(f"{s}:{c}" for s, c in zip(censored["seed"], censored["censored"])),
                     "estimate": _lr(est) if est_f != 2 else math.nan, "estimate_censored": CENSOR_TEXT[est_f],
                     "n_probes": int(g["n_probes"].sum()), **stats})
    return pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])


def median_and_range(per_seed: pd.DataFrame) -> dict[str, Any]:
    """The median of eta_max_of rows over seeds and their range (min, max), censored seeds at their bound
    and flagged as in `eta_max_summary` (`*_censored` "above" = ">=", "below" = "<"): with a handful of
    seeds the range, not an interval, is the spread a table can honestly show."""
    v, f = _log_values(per_seed)
    row: dict[str, Any] = {"n_seeds": len(v), "n_censored_below": int((f == -1).sum()),
                           "n_censored_above": int((f == 1).sum())}
    stats = ((_flagged_median(v, f), _kth(v, f, 1, True), _kth(v, f, 1, False)) if len(v)
             else ((math.nan, 0),) * 3)
    for name, (x, flag) in zip(("median", "min", "max"), stats):
        row[name], row[f"{name}_censored"] = (_lr(x) if flag != 2 else math.nan), CENSOR_TEXT[int(flag)]
    return row


def ratio(a: pd.DataFrame, b: pd.DataFrame, level: float = CI_LEVEL) -> dict[str, Any]:
    """eta_max(b) / eta_max(a) over seeds (`shift_test` on log-LR): the Hodges-Lehmann ratio, its exact
    interval and the exact two-sided p. `resolved` here = p <= ALPHA with >= MIN_SEEDS seeds a side (one
    comparison alone); compare() decides the table's verdict over the preset's family (Holm)."""
    t = shift_test(a, b, level)
    (est, est_f), ci = t["shift"], t["ci"]
    enough = min(len(a), len(b)) >= MIN_SEEDS
    return {"n_seeds": len(b), "n_seeds_baseline": len(a),
            "ratio": _lr(est) if est_f != 2 else math.nan, "ratio_censored": CENSOR_TEXT[est_f],
            "ci_low": _lr(ci[0]), "ci_high": _lr(ci[2]), "ci_level": level,
            "resolved": bool(enough and t["p_value"] <= ALPHA),
            "ci_low_censored": CENSOR_TEXT[ci[1]], "ci_high_censored": CENSOR_TEXT[ci[3]],
            "ci_coverage": round(t["ci_coverage"], 6), "interval": f"{INTERVAL_TEXT} (Hodges-Lehmann)",
            "test": t["test"], "paired": t["paired"], "n_undetermined": t["n_undetermined"],
            "p_value": t["p_value"]}


# -- LR50: a logistic model of P(stable | log LR) ----------------------------------------------------
def _firth_loglik(b0: np.ndarray, b1: np.ndarray, x: np.ndarray, y: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Firth-penalised log-likelihood of logit P(stable) = b0 + b1 x, for arrays of (b0, b1); probes grouped
    by LR: at x[j], y[j] stable of n[j]."""
    eta = b0[..., None] + b1[..., None] * x
    p = 0.5 * (1 + np.tanh(eta / 2))
    w = n * p * (1 - p)
    det = w.sum(-1) * (w * x * x).sum(-1) - (w * x).sum(-1) ** 2
    ll = (y * eta - n * np.logaddexp(0, eta)).sum(-1)
    return ll + 0.5 * np.log(np.maximum(det, 1e-300))


def _firth_fit(x: np.ndarray, y: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """Firth's penalised maximum likelihood (finite even when the outcomes separate), by Newton steps on the
    modified score X'(y - p + h (1/2 - p)), halved while the penalised likelihood does not rise."""
    X = np.column_stack([np.ones_like(x), x])
    b = np.zeros(2)
    for _ in range(200):
        p = 0.5 * (1 + np.tanh(X @ b / 2))
        w = n * p * (1 - p)
        info = X.T @ (X * w[:, None])
        inv = np.linalg.pinv(info)
        h = w * np.einsum("ij,jk,ik->i", X, inv, X)
        step = inv @ (X.T @ (y - n * p + h * (0.5 - p)))
        cur = _firth_loglik(np.array(b[0]), np.array(b[1]), x, y, n)
        while np.abs(step).max() > 1e-12 and _firth_loglik(np.array(b[0] + step[0]), np.array(b[1] + step[1]), x, y, n) < cur - 1e-12:
            step = step / 2
        b = b + step
        if np.abs(step).max() < 1e-10:
            break
    return float(b[0]), float(b[1])


def _profile(scan: np.ndarray, x: np.ndarray, y: np.ndarray, n: np.ndarray, bound: float = 200.0, iters: int = 45) -> np.ndarray:
    """max over b1 of the penalised log-likelihood with the midpoint held at each `scan` value
    (logit = b1 (x - x0)): a golden-section search on b1 in [-bound, bound], all scan points at once."""
    g = (math.sqrt(5) - 1) / 2
    lo, hi = np.full(len(scan), -bound), np.full(len(scan), bound)
    f = lambda b1: _firth_loglik(-b1 * scan, b1, x, y, n)
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        left = fc >= fd
        hi, lo = np.where(left, d, hi), np.where(left, lo, c)
        d_new, c_new = np.where(left, c, lo + g * (hi - lo)), np.where(left, hi - g * (hi - lo), d)
        fd, fc = np.where(left, fc, np.nan), np.where(left, np.nan, fd)
        c, d = c_new, d_new
        fc = np.where(np.isnan(fc), f(c), fc)
        fd = np.where(np.isnan(fd), f(d), fd)
    return np.maximum(np.maximum(fc, fd), f(np.zeros(len(scan))))


LR50_COLUMNS = ["lr50", "lr50_low", "lr50_high", "lr50_low_censored", "lr50_high_censored", "lr50_n"]


def lr50(lrs: Iterable[float], stable: Iterable[bool], level: float = CI_LEVEL, n_scan: int = 301) -> dict[str, Any]:
    """The LR where a logistic model of P(stable | log LR) crosses 1/2, with a profile-likelihood interval.

    Fitted by Firth's penalised likelihood on every probe at or above the smallest stable LR (below it, a
    loss bar fails runs that were too slow to train, not unstable: the eta_max rule ignores that side too).
    Interval: the LR50 values x0 whose profile (logit = b1 (log lr - x0), b1 free) stays within
    chi2_1(level)/2 of the maximum, scanned over the probed log-LR range widened by its own span each side;
    an edge at the scan's end is censored. Deterministic; treats probes as independent given the LR.
    All probes stable (or none): lr50 is the largest (smallest) LR probed, censored above (below).
    """
    x_all = np.log(np.asarray(list(lrs), dtype=float))
    y_all = np.asarray(list(stable), dtype=float)
    out = dict.fromkeys(LR50_COLUMNS, math.nan) | {"lr50_low_censored": "", "lr50_high_censored": "",
                                                   "lr50_censored": "", "lr50_n": len(x_all)}
    if not len(x_all):
        return out
    if not y_all.any() or y_all.all():
        edge = _lr(x_all.max() if y_all.all() else x_all.min())
        flag = "above" if y_all.all() else "below"
        return out | {"lr50": edge, "lr50_low": edge, "lr50_high": edge, "lr50_low_censored": flag,
                      "lr50_high_censored": flag, "lr50_censored": flag}
    keep = x_all >= x_all[y_all > 0].min()
    x, inverse = np.unique(x_all[keep], return_inverse=True)
    y, n = np.bincount(inverse, y_all[keep]), np.bincount(inverse).astype(float)
    centre = float(np.average(x, weights=n))
    xc = x - centre
    b0, b1 = _firth_fit(xc, y, n)
    best = float(_firth_loglik(np.array(b0), np.array(b1), xc, y, n))
    span = max(float(xc.max() - xc.min()), math.log(2))
    scan = np.linspace(xc.min() - span, xc.max() + span, n_scan)
    cut = NormalDist().inv_cdf((1 + level) / 2) ** 2 / 2
    within = lambda c: best - _profile(np.atleast_1d(c), xc, y, n) <= cut
    inside = np.flatnonzero(within(scan))
    est = -b0 / b1 if b1 != 0 else math.nan
    lo, hi = (scan[inside[0]], scan[inside[-1]]) if len(inside) else (math.nan, math.nan)
    if len(inside):  # bisect both edges at once, between each and the scan point next to it outward
        a = np.array([scan[inside[0]], scan[inside[-1]]])
        b = np.array([scan[max(inside[0] - 1, 0)], scan[min(inside[-1] + 1, n_scan - 1)]])
        for _ in range(20):
            mid = (a + b) / 2
            ok = within(mid)
            a, b = np.where(ok, mid, a), np.where(ok, b, mid)
        lo, hi = float(a[0]), float(a[1])
    censored = ""
    if not math.isfinite(est) or not scan[0] <= est <= scan[-1]:  # a flat fit: the midpoint is off the scan
        censored = "below" if math.isfinite(est) and est < scan[0] else "above" if math.isfinite(est) else "undetermined"
        est = scan[0] if censored == "below" else scan[-1] if censored == "above" else math.nan
    return out | {"lr50": _lr(est + centre), "lr50_censored": censored, "lr50_n": int(n.sum()),
                  "lr50_low": _lr(lo + centre), "lr50_high": _lr(hi + centre),
                  "lr50_low_censored": "below" if len(inside) and inside[0] == 0 else "",
                  "lr50_high_censored": "above" if len(inside) and inside[-1] == n_scan - 1 else ""}


def lr50_table(judged: pd.DataFrame, keys: Sequence[str] | None = None, level: float = CI_LEVEL) -> pd.DataFrame:
    """lr50 per (setting, criterion) over every probe of every seed."""
    keys = list(keys) if keys is not None else setting_keys(judged)
    rows = [{**dict(zip([*keys, "criterion"], values)), **lr50(g["lr"], g["stable"], level)}
            for values, g in _groups(judged, [*keys, "criterion"])]
    return pd.DataFrame(rows, columns=[*keys, "criterion", *LR50_COLUMNS, "lr50_censored"])


# -- which comparisons a preset declared, which arms are one ----------------------------------------
def baseline_setting(row: Any) -> dict[str, str]:
    """A comparison row's `baseline` text, as compare() writes it (`norm=post, warmup=none, warmup_steps=0`),
    back as a dict of strings."""
    return dict(part.split("=", 1) for part in str(row["baseline"]).split(", ") if "=" in part)


def parse_setting(text: Any) -> dict[str, Any]:
    """A warmup setting as swept, `shape@T_w[@init_ratio]` -> {"warmup": shape, "warmup_steps": T_w};
    `shape@null` (a length set by a rule, e.g. untuned_linear) -> {"warmup": shape}. A mapping names a
    setting that differs in more than warmup, e.g. {norm: post, warmup: none@0}: its other keys must be
    setting keys (summary.SETTING_KEYS), and compare() then varies them too."""
    if isinstance(text, Mapping):
        other = {str(k): v for k, v in text.items() if k != "warmup"}
        unknown = sorted(set(other) - set(SETTING_KEYS) | ({"warmup_steps"} & set(other)))
        if "warmup" not in text or unknown:
            raise ValueError(f"comparisons: {dict(text)!r} is not a setting; write e.g. "
                             f"{{norm: post, warmup: none@0}} with keys of {', '.join(SETTING_KEYS)}")
        return {**other, **parse_setting(text["warmup"])}
    parts = str(text).split("@")
    if len(parts) < 2 or not parts[0] or not re.fullmatch(r"\d+|null", parts[1]):
        raise ValueError(f"comparisons: {text!r} is not a warmup setting; write shape@T_w, e.g. none@0 or linear@30")
    return {"warmup": parts[0]} if parts[1] == "null" else {"warmup": parts[0], "warmup_steps": int(parts[1])}


@dataclass(frozen=True)
class Declared:
    """What an experiment's presets declared before their runs: comparison pairs (a, b) as warmup-setting
    dicts, and the experiments its LRs were chosen from (`selected_from`)."""

    pairs: tuple[tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]], ...] = ()
    selected_from: tuple[str, ...] = ()
    compare_on: tuple[str, ...] = ("eta_max",)


def declared(experiment: str, conf_dir: Path | None = None) -> Declared:
    """The `comparisons:` ([[a, b], ...], each a `shape@T_w`), `selected_from:` and `compare_on:` (what the
    pairs are compared on, of MEASURES; default eta_max) keys of every preset of `experiment`
    (conf/experiment/<name>/*.yaml or <name>.yaml); an experiment without presets declares none."""
    import yaml

    from warmup_lab.paths import CONF_DIR

    root = Path(conf_dir or CONF_DIR) / "experiment"
    files = sorted((root / experiment).glob("*.yaml")) if (root / experiment).is_dir() else \
        [p for p in [root / f"{experiment}.yaml"] if p.is_file()]
    pairs, sources, measures = [], [], []
    for path in files:
        data = yaml.safe_load(path.read_text()) or {}
        for item in data.get("comparisons") or []:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError(f"comparisons: {item!r} in {path.name} is not a pair; write [none@0, linear@30]")
            pair = tuple(tuple(sorted(parse_setting(s).items())) for s in item)
            if pair not in pairs:
                pairs.append(pair)
        src = data.get("selected_from") or []
        sources += [s for s in ([src] if isinstance(src, str) else src) if s not in sources]
        on = data.get("compare_on") or []
        for m in [on] if isinstance(on, str) else on:
            if m not in MEASURES:
                raise ValueError(f"compare_on: {m!r} in {path.name} is not a measure; write one of {', '.join(MEASURES)}")
            measures += [m] if m not in measures else []
    return Declared(tuple(pairs), tuple(sources), tuple(measures) or ("eta_max",))


def one_arm_pairs(curves: dict[Any, dict[float, np.ndarray]], rtol: float = 1e-6) -> set[frozenset]:
    """Pairs of settings whose applied LR is the same at every step of every target LR both ran: two
    spellings of one schedule, one arm (never compared). `curves`: setting -> {target LR: lr per step}."""
    same = set()
    items = list(curves.items())
    for i, (sa, ca) in enumerate(items):
        for sb, cb in items[i + 1:]:
            shared = set(ca) & set(cb)
            if shared and all(len(ca[lr]) == len(cb[lr]) and np.allclose(ca[lr], cb[lr], rtol=rtol, atol=0)
                              for lr in shared):
                same.add(frozenset((sa, sb)))
    return same


def reused_seeds(claim: pd.DataFrame, source: pd.DataFrame, match: Sequence[str] = ("task",)) -> list[int]:
    """Seeds of a claim's runs that the runs its LR was chosen from also used (same `match` keys): such a
    claim is not on fresh seeds."""
    cols = [c for c in match if c in claim and c in source] + ["seed"]
    seen = {tuple(r) for r in source[cols].astype(str).itertuples(index=False)}
    return sorted({int(s) for s, r in zip(claim["seed"], claim[cols].astype(str).itertuples(index=False))
                   if tuple(r) in seen})


def setting_id(values: dict[str, Any], keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """A hashable name of one setting (its keys' values as text), shared by compare() and its callers."""
    return tuple((k, str(values[k])) for k in keys if k in values)


def _verdict(row: dict[str, Any]) -> str:
    if row["one_arm"]:
        return "one arm"
    if min(row["n_seeds"], row["n_seeds_baseline"]) < MIN_SEEDS:
        return "too few seeds"
    if not row["declared"]:
        return "exploratory"
    if row["reused_seeds"]:
        return "seeds reused"
    return "resolved" if row["p_holm"] <= ALPHA else "not resolved"


def compare(per_seed: pd.DataFrame, keys: Sequence[str] | None = None, vary: Sequence[str] = VARY,
            baseline: dict[str, Any] | None = None, level: float = CI_LEVEL, declared: Declared | None = None,
            one_arm: Iterable[frozenset] = (), source_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every setting against its baseline (the settings that share all keys but `vary` and match `baseline`,
    default warmup_steps == 0: no warmup), plus every pair the preset declared; one row per (pair, criterion).

    Verdict (`verdict`; `resolved` is True only for "resolved"): "one arm" (identical LR curves: not
    tested), "too few seeds" (< MIN_SEEDS a side), "exploratory" (not declared before the runs), "seeds
    reused" (the LR was chosen from runs on these seeds: `source_runs`), else "resolved" when the
    Holm-adjusted p over the declared, tested comparisons of the same arm and criterion is <= ALPHA.
    """
    keys = list(keys) if keys is not None else setting_keys(per_seed)
    baseline = baseline if baseline is not None else {"warmup_steps": 0}
    declared = declared or Declared()
    one_arm = set(one_arm)
    # Keys a declared pair names beyond `vary` (e.g. norm: Post-LN vs Pre-LN) are varied too; a setting is
    # compared with its baseline only within equal values of them.
    named = {k for pair in declared.pairs for side in pair for k, _ in side}
    across = [k for k in keys if k in named and k not in vary]
    vary = [*vary, *across]
    fixed = [k for k in keys if k not in vary]
    vary_here = [k for k in keys if k in vary]
    rows: list[dict[str, Any]] = []
    for values, g in _groups(per_seed, [*fixed, "criterion"]):
        fixed_values = dict(zip([*fixed, "criterion"], values))
        settings = {tuple(v): s for v, s in _groups(g, vary_here)}
        def is_base(v: tuple) -> bool:
            d = dict(zip(vary_here, v))
            return all(k in d and str(d[k]) == str(x) and not (isinstance(x, (int, float)) and
                                                                pd.to_numeric(d[k], errors="coerce") != x)
                       for k, x in baseline.items()) if set(baseline) <= set(vary_here) else False
        def matches(v: tuple, want: tuple) -> bool:
            d = dict(zip(vary_here, v))
            return all(k in d and str(d[k]) == str(x) for k, x in want)
        def same_across(a: tuple, b: tuple) -> bool:
            da, db = dict(zip(vary_here, a)), dict(zip(vary_here, b))
            return all(str(da[k]) == str(db[k]) for k in across)
        pairs = [(b, o) for b in settings if is_base(b) for o in settings if not is_base(o) and same_across(b, o)]
        wanted = set()
        for want_a, want_b in declared.pairs:
            a = next((v for v in settings if matches(v, want_a)), None)
            b = next((v for v in settings if matches(v, want_b)), None)
            if a is not None and b is not None:
                wanted.add((a, b))
                if (a, b) not in pairs:
                    pairs.append((a, b))
        family = []
        id_keys = [k for k in keys if k != "lr"]  # one_arm pairs name settings, not their target LRs
        for a, b in pairs:
            ida = setting_id({**fixed_values, **dict(zip(vary_here, a))}, id_keys)
            idb = setting_id({**fixed_values, **dict(zip(vary_here, b))}, id_keys)
            both = pd.concat([settings[a], settings[b]])
            row = {**fixed_values, **dict(zip(vary_here, b)),
                   "baseline": ", ".join(f"{k}={v}" for k, v in zip(vary_here, a)),
                   **ratio(settings[a], settings[b], level), "declared": (a, b) in wanted,
                   # identical LR curves make one arm only where nothing else differs (not Post- vs Pre-LN)
                   "one_arm": frozenset((ida, idb)) in one_arm and same_across(a, b),
                   "reused_seeds": " ".join(map(str, reused_seeds(both, source_runs)))
                   if source_runs is not None and len(source_runs) else ""}
            if row["one_arm"]:
                row["p_value"] = math.nan
            family.append(row)
        tested = [r["declared"] and not r["one_arm"] and min(r["n_seeds"], r["n_seeds_baseline"]) >= MIN_SEEDS
                  for r in family]
        adjusted = holm([r["p_value"] if t else math.nan for r, t in zip(family, tested)])
        for r, p in zip(family, adjusted):
            r["p_holm"] = p
            r["verdict"] = _verdict(r)
            r["resolved"] = r["verdict"] == "resolved"
        rows += family
    return pd.DataFrame(rows, columns=[*keys, *COMPARE_COLUMNS])


def final_loss_compare(probes: pd.DataFrame, keys: Sequence[str] | None = None, level: float = CI_LEVEL,
                       declared: Declared | None = None, one_arm: Iterable[frozenset] = (),
                       source_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """compare() on the final training loss at each target LR (`lr` column): ratio = loss(b) / loss(baseline)
    per seed (Hodges-Lehmann, exact interval, exact paired test, Holm over the declared pairs at that LR).
    A run without a finite final loss (diverged) enters as a lower bound at the largest finite loss of its
    LR, flagged like a censored eta_max, so it ranks above every finite loss and its size is not guessed."""
    keys = list(keys) if keys is not None else setting_keys(probes)
    loss = pd.to_numeric(probes["final_train_loss"], errors="coerce")
    bad = ~np.isfinite(loss) | probes["status"].eq(runs.DIVERGED)
    top = loss.where(~bad).groupby(probes["lr"]).transform("max").fillna(1.0)
    per_seed = probes[[*keys, "lr", "seed"]].assign(
        criterion="final_train_loss", eta_max=loss.where(~bad, top), hi=np.nan,
        censored=np.where(bad, "above", ""), n_probes=1)
    return compare(per_seed, [*keys, "lr"], level=level, declared=declared, one_arm=one_arm,
                   source_runs=source_runs)


def best_lr_table(probes: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Per setting: the target LR with the lowest median final training loss over seeds (a run without a
    finite final loss, or a diverged one, counts as +inf), how many LRs of the setting's grid lie below and
    above it (`inside` = at least 2 below and 1 above: the optimum is inside the grid, not at its edge),
    and the range of the per-seed best LRs."""
    keys = list(keys) if keys is not None else setting_keys(probes)
    loss = pd.to_numeric(probes["final_train_loss"], errors="coerce")
    loss = loss.where(np.isfinite(loss) & ~probes["status"].eq(runs.DIVERGED), np.inf)
    frame = probes.assign(_loss=loss)
    rows = []
    for values, g in _groups(frame, keys):
        med = g.groupby("lr")["_loss"].median()
        grid = sorted(med.index)
        best = float(med.idxmin())
        per_seed = g.loc[g.groupby("seed")["_loss"].idxmin(), "lr"]
        below, above = sum(lr < best for lr in grid), sum(lr > best for lr in grid)
        rows.append({**dict(zip(keys, values)), "best_lr": best, "median_final_train_loss": float(med.min()),
                     "n_seeds": int(g["seed"].nunique()), "n_lrs": len(grid), "n_lrs_below": below,
                     "n_lrs_above": above, "inside": bool(below >= 2 and above >= 1),
                     "seed_best_lr_min": float(per_seed.min()), "seed_best_lr_max": float(per_seed.max())})
    return pd.DataFrame(rows)


def p_stable(judged: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """P(stable | LR) per setting and criterion, from every probe of every seed (n beside it)."""
    keys = list(keys) if keys is not None else setting_keys(judged)
    if judged.empty:
        return pd.DataFrame(columns=[*keys, *P_STABLE_COLUMNS])
    out = (judged.groupby([*keys, "criterion", "lr"], dropna=False, sort=True)["stable"]
           .agg(n="size", n_stable="sum").reset_index())
    out["n_stable"] = out["n_stable"].astype(int)
    out["p_stable"] = out["n_stable"] / out["n"]
    bounds = [wilson(k, n) for k, n in zip(out["n_stable"], out["n"])]
    out["p_low"], out["p_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return out[[*keys, *P_STABLE_COLUMNS]]


def wilson(k: int, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """The Wilson score interval of k successes in n (two-sided `level`): unlike p +- z sqrt(p(1-p)/n), it is
    not empty at k = 0 or k = n, which is where P(stable) of a few seeds usually sits."""
    if n <= 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# -- LR sensitivity on one fixed grid --------------------------------------------------------------
class GridMismatch(ValueError):
    """Settings measured on different LR grids: their sensitivities are not comparable."""


def lr_sensitivity(lrs: Iterable[float], final_losses: Iterable[float], init_losses: Iterable[float]) -> float:
    """Wortsman et al. 2023: mean over the LR grid of min(final, init loss) minus the best final loss.

    Non-finite final losses (diverged runs) count as the init loss, as the definition's min() implies.
    The best loss is taken over the same capped values: identical to the paper's whenever some LR
    trains, and 0 (not negative) when no LR in the range gets below its initial loss.
    """
    rows = list(zip(lrs, final_losses, init_losses))
    if not rows:
        return float("nan")
    capped = [min(f, i) if math.isfinite(f) else i for _, f, i in rows]
    return sum(capped) / len(capped) - min(capped)


def _grid_text(lrs: Iterable[float]) -> str:
    return "[" + ", ".join(f"{x:.4g}" for x in sorted(set(lrs))) + "]"


def lr_sensitivity_table(probes: pd.DataFrame, keys: Sequence[str] | None = None, grid: Sequence[float] | None = None,
                         loss: str = "final_eval_loss") -> pd.DataFrame:
    """lr_sensitivity on `loss` (eval loss by default; its init value is init_loss) per (setting, seed)
    over ONE LR grid shared by every setting and seed, then mean over seeds (n beside it).

    `grid` None: the grid is the LRs of the first setting; any setting or seed whose LRs differ raises
    GridMismatch naming both grids (an adaptive search's probes are not a grid). A given `grid` selects
    those LRs and requires every setting to have all of them.
    """
    keys = list(keys) if keys is not None else setting_keys(probes)
    rows, ref = [], (sorted(float(x) for x in grid) if grid is not None else None)
    ref_label = "the grid"
    for values, g in _groups(probes, [*keys, "seed"]):
        lrs = sorted(set(g["lr"].astype(float)))
        if ref is not None and grid is not None:
            missing = [x for x in ref if not any(math.isclose(x, y, rel_tol=1e-9) for y in lrs)]
            if missing:
                raise GridMismatch(f"{_label(keys, values)} has no run at lr {_grid_text(missing)} of the grid "
                                   f"{_grid_text(ref)}: run the same fixed LR grid for every setting")
            g = g[g["lr"].map(lambda y: any(math.isclose(x, y, rel_tol=1e-9) for x in ref))]
            lrs = ref
        if ref is None:
            ref, ref_label = lrs, _label([*keys, "seed"], values)
        if len(lrs) != len(ref) or not all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(lrs, ref)):
            raise GridMismatch(f"LR sensitivity compares settings on one fixed grid, but {_label([*keys, 'seed'], values)} "
                               f"has lrs {_grid_text(lrs)} and {ref_label} has {_grid_text(ref)}; run the same "
                               "log-spaced LR grid for every setting")
        g = g.sort_values("lr")
        final = pd.to_numeric(g[loss], errors="coerce") if loss in g else pd.Series(np.nan, index=g.index)
        rows.append({**dict(zip([*keys, "seed"], values)), "lr_min": lrs[0], "lr_max": lrs[-1], "n_lrs": len(lrs),
                     "sensitivity": lr_sensitivity(g["lr"], final.fillna(np.inf), g["init_loss"].astype(float))})
    per_seed = pd.DataFrame(rows)
    if per_seed.empty:
        return per_seed
    return (per_seed.groupby(keys, dropna=False).agg(lr_min=("lr_min", "min"), lr_max=("lr_max", "max"),
                                                     n_lrs=("n_lrs", "max"), sensitivity=("sensitivity", "mean"),
                                                     std=("sensitivity", "std"), n_seeds=("sensitivity", "size"))
            .reset_index().assign(loss=loss))


def _label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "the setting"


# -- files -----------------------------------------------------------------------------------------
def tables(probes: pd.DataFrame, keys: Sequence[str] | None = None, criteria: Sequence[str] = DEFAULT_CRITERIA,
           level: float = CI_LEVEL, vary: Sequence[str] = VARY, declared: Declared | None = None,
           one_arm: Iterable[frozenset] = (), source_runs: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Every eta_max table of one set of probes, by file name (`vary`: the keys compare() varies). The
    summary carries LR50 (lr50_table) beside the median of the per-seed eta_max."""
    keys = list(keys) if keys is not None else setting_keys(probes)
    judged = judge(probes, criteria, keys)
    per_seed = eta_max_per_seed(judged, keys)
    summary = eta_max_summary(per_seed, keys, level)
    if len(summary):
        summary = summary.merge(lr50_table(judged, keys, level), on=[*keys, "criterion"], how="left")
    return {ETA_FILE: per_seed, SUMMARY_FILE: summary, P_STABLE_FILE: p_stable(judged, keys),
            COMPARE_FILE: compare(per_seed, keys, vary, level=level, declared=declared, one_arm=one_arm,
                                  source_runs=source_runs)}


def write_tables(out_dir: Path, frames: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Write each table atomically (a killed sweep leaves the old file or the new one)."""
    paths = {}
    for name, frame in frames.items():
        paths[name] = Path(out_dir) / name
        runs.atomic_write_text(paths[name], frame.to_csv(index=False, lineterminator="\n", float_format=FLOAT_FORMAT))
    return paths


def read_table(path: Path) -> pd.DataFrame:
    """A table written by write_tables; `censored` read back as "" (not NaN) when uncensored."""
    df = pd.read_csv(path, keep_default_na=True, float_precision="round_trip")
    for col in [c for c in df.columns if c.endswith("censored") or c == "censored_seeds"]:
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df
