"""Stability criteria, the one eta_max rule, and its statistics over seeds (docs/definitions.md).

The one module that owns them, and the files they are written to: the trainer writes the plain-rule
status, and the sweeper, the report and the figures all call these functions on the same run summaries.

API (names other code relies on; columns may be added, never renamed):
  DEFAULT_CRITERIA                  ("plain", "loss_frac_0.65", "loss_frac_0.5"); DEFAULT_CRITERION "plain"
  criterion(name) -> Criterion      "plain", "loss_frac_<f>", "near_best_<k>", "not_diverged"; `.text` is the
                                    one-line definition (criteria_text(names) joins them for a table)
  probes_from_runs(df, keys=None)   run summaries (report.load_runs rows) -> probe rows (keys, seed, lr, ...)
  judge(probes, criteria, keys)     one row per (probe, criterion) with a bool `stable`
  eta_max_of(lrs, stable) -> dict   the rule for one (setting, seed): eta_max, lo, hi, censored, non_monotone
  eta_max_per_seed(judged, keys)    ETA_COLUMNS       (eta_max.csv)
  eta_max_summary(per_seed, keys, level=0.9, n_boot=2000, rng_seed=0)   SUMMARY_COLUMNS (eta_max_summary.csv)
  p_stable(judged, keys)            P_STABLE_COLUMNS  (p_stable.csv)
  compare(per_seed, keys, vary=VARY, baseline={"warmup_steps": 0})   COMPARE_COLUMNS (eta_max_compare.csv)
  ratio(per_seed_a, per_seed_b) -> dict   eta_max(b) / eta_max(a) with its bootstrap CI and `resolved`
  lr_sensitivity(lrs, final, init)  one setting's value (Wortsman et al.)
  lr_sensitivity_table(probes, keys, grid=None)   raises GridMismatch when settings' LR grids differ
  tables(probes, keys, criteria=DEFAULT_CRITERIA, ...) -> {file name: DataFrame}; write_tables(out_dir, tables);
  read_table(path)                  a written table back, censoring flags as "" (not NaN)
`keys` = the columns that identify a setting; default: those of SETTING_KEYS present in the frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from warmup_lab import runs
from warmup_lab.summary import SETTING_KEYS

ETA_FILE, SUMMARY_FILE, P_STABLE_FILE = "eta_max.csv", "eta_max_summary.csv", "p_stable.csv"
COMPARE_FILE, SENSITIVITY_FILE = "eta_max_compare.csv", "lr_sensitivity.csv"
ETA_COLUMNS = ["criterion", "seed", "eta_max", "lo", "hi", "censored", "n_probes", "non_monotone", "n_unstable_below"]
SUMMARY_COLUMNS = ["criterion", "n_seeds", "n_censored_below", "n_censored_above", "censored_seeds",
                   "estimate", "estimate_censored", "ci_low", "ci_high", "ci_level", "n_probes",
                   "ci_low_censored", "ci_high_censored"]
P_STABLE_COLUMNS = ["criterion", "lr", "n", "n_stable", "p_stable"]
COMPARE_COLUMNS = ["criterion", "baseline", "n_seeds", "n_seeds_baseline", "ratio", "ratio_censored", "ci_low",
                   "ci_high", "ci_level", "resolved", "ci_low_censored", "ci_high_censored"]
CI_LEVEL, N_BOOT, RNG_SEED = 0.9, 2000, 0
VARY = ("warmup", "warmup_steps")  # what compare() varies against its no-warmup baseline


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
    raise ValueError(f"criterion={name!r}: use plain, loss_frac_<f> with 0 < f < 1, near_best_<k> with k >= 1, "
                     "or not_diverged")


# The criteria every report and search tabulates side by side, unless told otherwise (the report's --criteria,
# the search's hydra.sweeper.criteria): loss_frac_0.65 sits just below the char-LM's unigram entropy (0.69 l0:
# learned more than character frequencies), loss_frac_0.5 is the stricter bar that the image arm's trained
# runs clear by far.
DEFAULT_CRITERIA = ("plain", "loss_frac_0.65", "loss_frac_0.5")
DEFAULT_CRITERION = "plain"  # the one a max-stable-LR search steers by, unless its preset names another


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
                                "final_eval_loss"]).rename(columns={"target_lr": "lr"})
    out = out.dropna(subset=["lr"])
    for col in ("lr", "init_loss", "final_train_loss", "final_eval_loss"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in [*keys, "seed"]:  # 10.0 -> 10: a column of whole numbers (seeds, lengths) reads as such
        num = pd.to_numeric(out[col], errors="coerce")
        if len(out) and num.notna().all() and (num % 1 == 0).all():
            out[col] = num.astype(int)
    return out.reset_index(drop=True)


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


def _boot(vals: np.ndarray, flags: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Medians of `n_boot` resamples of the seeds (with replacement)."""
    idx = rng.integers(0, len(vals), size=(n_boot, len(vals)))
    return _medians(vals[idx], flags[idx])


def _interval(reps: np.ndarray, flags: np.ndarray, level: float) -> tuple[float, int, float, int]:
    """Percentile interval (low, its flag, high, its flag). An undetermined replicate (flag 2: its median
    could lie anywhere) counts at -inf for the low edge and at +inf for the high edge, never left out: an
    edge that lands on one is undetermined (nan, flag 2), so an interval built on censored medians that
    point both ways cannot resolve anything."""
    keep = ~np.isnan(reps) | (flags == 2)
    reps, flags = reps[keep], flags[keep]
    if not len(reps):
        return math.nan, 2, math.nan, 2
    a = (1 - level) / 2
    undetermined = flags == 2
    edges = []
    for fill, q in ((-np.inf, a), (np.inf, 1 - a)):
        r = np.where(undetermined, fill, reps)
        order = np.argsort(np.where(undetermined, fill, r + _TIE * flags), kind="stable")
        k = min(max(math.ceil(q * len(r)) - 1, 0), len(r) - 1)
        value, flag = float(r[order][k]), int(flags[order][k])
        edges += [math.nan, 2] if flag == 2 else [value, flag]
    return edges[0], edges[1], edges[2], edges[3]


def _lr(x: float) -> float:
    """exp of a log-LR at 10 significant digits, as the search grid writes LRs (exp(log(lr)) == lr)."""
    return math.nan if math.isnan(x) else float(f"{math.exp(x):.10g}")


def eta_max_summary(per_seed: pd.DataFrame, keys: Sequence[str] | None = None, level: float = CI_LEVEL,
                    n_boot: int = N_BOOT, rng_seed: int = RNG_SEED) -> pd.DataFrame:
    """Per (setting, criterion): the median of eta_max over seeds on log-LR (censored seeds at their bound,
    flagged) and a percentile bootstrap interval over SEEDS (`n_boot` resamples, fixed `rng_seed`).

    `estimate_censored` / `ci_low_censored` / `ci_high_censored`: "below" = the value is an upper bound
    ("<"), "above" = a lower bound (">="), "undetermined" = censored both ways (value NaN). With one
    seed the interval is that seed's value: read `n_seeds`.
    """
    keys = list(keys) if keys is not None else setting_keys(per_seed)
    rows = []
    for values, g in _groups(per_seed, [*keys, "criterion"]):
        v, f = _log_values(g)
        est, est_f = _medians(v, f)
        lo, lo_f, hi, hi_f = _interval(*_boot(v, f, n_boot, np.random.default_rng(rng_seed)), level)
        censored = g[g["censored"].ne("")]
        rows.append({**dict(zip([*keys, "criterion"], values)), "n_seeds": len(g),
                     "n_censored_below": int(g["censored"].eq("below").sum()),
                     "n_censored_above": int(g["censored"].eq("above").sum()),
                     "censored_seeds": " ".join(f"{s}:{c}" for s, c in zip(censored["seed"], censored["censored"])),
                     "estimate": _lr(float(est)) if est_f != 2 else math.nan, "estimate_censored": CENSOR_TEXT[int(est_f)],
                     "ci_low": _lr(lo), "ci_high": _lr(hi), "ci_level": level, "n_probes": int(g["n_probes"].sum()),
                     "ci_low_censored": CENSOR_TEXT[lo_f], "ci_high_censored": CENSOR_TEXT[hi_f]})
    return pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])


def _ratio_flag(fb: np.ndarray, fa: np.ndarray) -> np.ndarray:
    """Flag of log b - log a: b ">=" or a "<" make it ">="; both directions at once: undetermined."""
    up = (fb == 1) | (fa == -1)
    down = (fb == -1) | (fa == 1)
    return np.where((fb == 2) | (fa == 2) | (up & down), 2, np.where(up, 1, np.where(down, -1, 0)))


def ratio(a: pd.DataFrame, b: pd.DataFrame, level: float = CI_LEVEL, n_boot: int = N_BOOT,
          rng_seed: int = RNG_SEED) -> dict[str, Any]:
    """eta_max(b) / eta_max(a), medians over seeds, with a bootstrap CI resampling each side's seeds
    independently. `resolved` = the interval excludes 1, counting a censored edge only in the direction
    its bound is safe (a ">=" low edge above 1, or a "<" high edge below 1)."""
    (va, fa), (vb, fb) = _log_values(a), _log_values(b)
    rng = np.random.default_rng(rng_seed)
    (ma, mfa), (mb, mfb) = _medians(va, fa), _medians(vb, fb)
    (ra, rfa), (rb, rfb) = _boot(va, fa, n_boot, rng), _boot(vb, fb, n_boot, rng)
    est_f = int(_ratio_flag(mfb, mfa))
    lo, lo_f, hi, hi_f = _interval(rb - ra, _ratio_flag(rfb, rfa), level)
    resolved = bool((lo > 0 and lo_f in (0, 1)) or (hi < 0 and hi_f in (0, -1)))
    return {"n_seeds": len(vb), "n_seeds_baseline": len(va),
            "ratio": _lr(float(mb - ma)) if est_f != 2 else math.nan, "ratio_censored": CENSOR_TEXT[est_f],
            "ci_low": _lr(lo), "ci_high": _lr(hi), "ci_level": level, "resolved": resolved,
            "ci_low_censored": CENSOR_TEXT[lo_f], "ci_high_censored": CENSOR_TEXT[hi_f]}


def compare(per_seed: pd.DataFrame, keys: Sequence[str] | None = None, vary: Sequence[str] = VARY,
            baseline: dict[str, Any] | None = None, level: float = CI_LEVEL, n_boot: int = N_BOOT,
            rng_seed: int = RNG_SEED) -> pd.DataFrame:
    """Every setting against its baseline: the settings that share all keys but `vary`, and match
    `baseline` (default warmup_steps == 0, i.e. no warmup). One row per (setting, criterion)."""
    keys = list(keys) if keys is not None else setting_keys(per_seed)
    baseline = baseline if baseline is not None else {"warmup_steps": 0}
    fixed = [k for k in keys if k not in vary]
    rows: list[dict[str, Any]] = []
    if not set(baseline) <= set(per_seed.columns):
        return pd.DataFrame(rows, columns=[*keys, *COMPARE_COLUMNS])
    for values, g in _groups(per_seed, [*fixed, "criterion"]):
        is_base = np.logical_and.reduce([pd.to_numeric(g[k], errors="coerce").eq(v) if isinstance(v, (int, float))
                                         else g[k].astype(str).eq(str(v)) for k, v in baseline.items()])
        vary_here = [k for k in keys if k in vary]
        others = g[~is_base]
        for base_values, base in _groups(g[is_base], vary_here):  # one baseline setting at a time
            base_label = ", ".join(f"{k}={v}" for k, v in zip(vary_here, base_values))
            for other_values, o in _groups(others, vary_here):
                rows.append({**dict(zip([*fixed, "criterion"], values)), **dict(zip(vary_here, other_values)),
                             "baseline": base_label, **ratio(base, o, level, n_boot, rng_seed)})
    return pd.DataFrame(rows, columns=[*keys, *COMPARE_COLUMNS])


def p_stable(judged: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """P(stable | LR) per setting and criterion, from every probe of every seed (n beside it)."""
    keys = list(keys) if keys is not None else setting_keys(judged)
    if judged.empty:
        return pd.DataFrame(columns=[*keys, *P_STABLE_COLUMNS])
    out = (judged.groupby([*keys, "criterion", "lr"], dropna=False, sort=True)["stable"]
           .agg(n="size", n_stable="sum").reset_index())
    out["n_stable"] = out["n_stable"].astype(int)
    out["p_stable"] = out["n_stable"] / out["n"]
    return out[[*keys, *P_STABLE_COLUMNS]]


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
           level: float = CI_LEVEL, n_boot: int = N_BOOT, rng_seed: int = RNG_SEED,
           vary: Sequence[str] = VARY) -> dict[str, pd.DataFrame]:
    """Every eta_max table of one set of probes, by file name (`vary`: the keys compare() varies)."""
    keys = list(keys) if keys is not None else setting_keys(probes)
    judged = judge(probes, criteria, keys)
    per_seed = eta_max_per_seed(judged, keys)
    return {ETA_FILE: per_seed, SUMMARY_FILE: eta_max_summary(per_seed, keys, level, n_boot, rng_seed),
            P_STABLE_FILE: p_stable(judged, keys),
            COMPARE_FILE: compare(per_seed, keys, vary, level=level, n_boot=n_boot, rng_seed=rng_seed)}


def write_tables(out_dir: Path, frames: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Write each table atomically (a killed sweep leaves the old file or the new one)."""
    paths = {}
    for name, frame in frames.items():
        paths[name] = Path(out_dir) / name
        runs.atomic_write_text(paths[name], frame.to_csv(index=False, lineterminator="\n"))
    return paths


def read_table(path: Path) -> pd.DataFrame:
    """A table written by write_tables; `censored` read back as "" (not NaN) when uncensored."""
    df = pd.read_csv(path, keep_default_na=True)
    for col in [c for c in df.columns if c.endswith("censored") or c == "censored_seeds"]:
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df
