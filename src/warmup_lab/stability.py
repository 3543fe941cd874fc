"""Stability criteria, the one eta_max rule, and its statistics over seeds (docs/definitions.md).

The one module that owns them, and the files they are written to: the trainer writes the plain-rule
status, and the sweeper, the report and the figures all call these functions on the same run summaries.

API (names other code relies on; columns may be added, never renamed):
  CRITERIA, DEFAULT_CRITERIA        criterion(name) -> Criterion(name, text, ...): "plain",
                                    "loss_frac_<f>", "near_best_<k>", "not_diverged"; `text` = one-line definition
  probes_from_runs(df, keys=None)   run summaries (report.load_runs rows) -> probe rows (keys, seed, lr, ...)
  judge(probes, criteria, keys)     one row per (probe, criterion) with a bool `stable`
  eta_max_of(lrs, stable) -> dict   the rule for one (setting, seed): eta_max, lo, hi, censored, non_monotone
  eta_max_per_seed(judged, keys)    ETA_COLUMNS       (eta_max.csv)
  eta_max_summary(per_seed, keys, level=0.9, n_boot=2000, rng_seed=0)   SUMMARY_COLUMNS (eta_max_summary.csv)
  p_stable(judged, keys)            P_STABLE_COLUMNS  (p_stable.csv)
  compare(per_seed, keys, vary="warmup_steps", baseline=0, ...)   COMPARE_COLUMNS (eta_max_compare.csv)
  lr_sensitivity(lrs, final, init)  one setting's value (Wortsman et al.)
  lr_sensitivity_table(probes, keys, grid=None)   raises GridMismatch when settings' LR grids differ
  tables(probes, keys, criteria=DEFAULT_CRITERIA, ...) -> dict[file name, DataFrame]; write_tables(out, ...)
`keys` = the columns that identify a setting; default: those of runs.SETTING_KEYS present in the frame.
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

ETA_FILE, SUMMARY_FILE, P_STABLE_FILE = "eta_max.csv", "eta_max_summary.csv", "p_stable.csv"
COMPARE_FILE, SENSITIVITY_FILE = "eta_max_compare.csv", "lr_sensitivity.csv"
ETA_COLUMNS = ["criterion", "seed", "eta_max", "lo", "hi", "censored", "n_probes", "non_monotone"]
SUMMARY_COLUMNS = ["criterion", "n_seeds", "n_censored_below", "n_censored_above", "censored_seeds",
                   "estimate", "estimate_censored", "ci_low", "ci_high", "ci_level", "n_probes"]
P_STABLE_COLUMNS = ["criterion", "lr", "n", "n_stable", "p_stable"]
COMPARE_COLUMNS = ["criterion", "baseline", "n_seeds", "n_seeds_baseline", "ratio", "ci_low", "ci_high",
                   "ci_level", "resolved"]
CI_LEVEL, N_BOOT, RNG_SEED = 0.9, 2000, 0
UNSTABLE = "error"  # status of a probe the search counted unstable after its retries (no summary)


# -- criteria --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """A named stability criterion. `kind` plain | loss_frac | near_best; `value` its f or k."""

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


DEFAULT_CRITERIA = ("plain", "loss_frac_0.5", "near_best_2")
CRITERIA = {name: criterion(name) for name in DEFAULT_CRITERIA}


def criteria_text(names: Iterable[str]) -> str:
    """The one-line definitions, printed with every table."""
    return "; ".join(criterion(n).text for n in names) + "."


# -- probes ----------------------------------------------------------------------------------------
def setting_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in runs.SETTING_KEYS if k in df.columns and df[k].notna().any()]


def probes_from_runs(df: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Finished runs as probes: setting keys, `seed`, `lr` (= target_lr), status, losses."""
    keys = list(keys) if keys is not None else setting_keys(df)
    done = df[df["status"].isin(runs.FINISHED_STATUSES)]
    out = done.reindex(columns=[*keys, "seed", "target_lr", "status", "init_loss", "final_train_loss",
                                "final_eval_loss"]).rename(columns={"target_lr": "lr"})
    out = out.dropna(subset=["lr"])
    for col in ("lr", "init_loss", "final_train_loss", "final_eval_loss"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
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
    """eta_max = the largest stable LR below the first unstable LR (probes sorted by LR).

    An LR probed more than once is stable only if every probe of it was. `censored`: "below" = no
    stable LR below the first unstable one (eta_max NaN; the truth is < hi), "above" = no unstable LR
    (eta_max = lo = the largest LR probed; the truth is >= it). `non_monotone`: a stable LR above hi.
    """
    by_lr: dict[float, bool] = {}
    n = 0
    for lr, ok in zip(lrs, stable):
        by_lr[float(lr)] = by_lr.get(float(lr), True) and bool(ok)
        n += 1
    order = sorted(by_lr)
    first_bad = next((lr for lr in order if not by_lr[lr]), None)
    good_below = [lr for lr in order if by_lr[lr] and (first_bad is None or lr < first_bad)]
    lo = good_below[-1] if good_below else math.nan
    hi = first_bad if first_bad is not None else math.nan
    censored = "below" if not good_below else "above" if first_bad is None else ""
    return {"eta_max": lo, "lo": lo, "hi": hi, "censored": censored, "n_probes": n,
            "non_monotone": first_bad is not None and any(by_lr[lr] for lr in order if lr > first_bad)}


def eta_max_per_seed(judged: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (setting, criterion, seed): eta_max_of over every probe of that seed."""
    keys = list(keys) if keys is not None else setting_keys(judged)
    rows = [{**dict(zip([*keys, "criterion", "seed"], values)), **eta_max_of(g["lr"], g["stable"])}
            for values, g in _groups(judged, [*keys, "criterion", "seed"])]
    return pd.DataFrame(rows, columns=[*keys, *ETA_COLUMNS])


# -- statistics over seeds -------------------------------------------------------------------------
def _log_values(per_seed: pd.DataFrame) -> np.ndarray:
    """log eta_max per seed, censored seeds at -inf (below) / +inf (above): their rank is exact, as every
    seed shares the LR range, so a median (unlike a mean) needs no guess of where they lie."""
    v = np.log(pd.to_numeric(per_seed["eta_max"], errors="coerce").to_numpy(dtype=float))
    v[per_seed["censored"].eq("below").to_numpy()] = -np.inf
    v[per_seed["censored"].eq("above").to_numpy()] = np.inf
    return v


def _medians(rows: np.ndarray) -> np.ndarray:
    """Row-wise median of log values with +-inf allowed; NaN where the middle pair is -inf and +inf."""
    s = np.sort(rows, axis=-1)
    n = s.shape[-1]
    if n % 2:
        return s[..., n // 2]
    a, b = s[..., n // 2 - 1], s[..., n // 2]
    with np.errstate(invalid="ignore"):
        return np.where(a == b, a, (a + b) / 2)  # -inf + inf = NaN: undetermined


def _median(v: np.ndarray) -> float:
    return float(_medians(np.asarray(v, dtype=float))) if len(v) else math.nan


def _boot_medians(v: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of `n_boot` resamples of the seeds (with replacement)."""
    return _medians(v[rng.integers(0, len(v), size=(n_boot, len(v)))])


def _interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval; replicates whose median is undetermined (NaN) are left out."""
    reps = reps[~np.isnan(reps)]
    if not len(reps):
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(reps, a, method="inverted_cdf")), float(np.quantile(reps, 1 - a, method="inverted_cdf"))


def _bounds(per_seed: pd.DataFrame) -> tuple[float, float]:
    """The probed range's edges as seen by censored seeds: below -> their hi, above -> their lo."""
    below = pd.to_numeric(per_seed.loc[per_seed["censored"].eq("below"), "hi"], errors="coerce")
    above = pd.to_numeric(per_seed.loc[per_seed["censored"].eq("above"), "lo"], errors="coerce")
    return (below.max() if len(below) else math.nan), (above.min() if len(above) else math.nan)


def _exp(x: float, low_bound: float, high_bound: float) -> tuple[float, str]:
    """Back to LR; an infinite log value becomes the range edge it is censored at, flagged."""
    if x == -np.inf:
        return low_bound, "below"
    if x == np.inf:
        return high_bound, "above"
    return (_lr(math.exp(x)), "") if math.isfinite(x) else (math.nan, "")


def _lr(x: float) -> float:
    """10 significant digits, as the search grid writes LRs: exp(log(lr)) gives back lr exactly."""
    return float(f"{x:.10g}")


def eta_max_summary(per_seed: pd.DataFrame, keys: Sequence[str] | None = None, level: float = CI_LEVEL,
                    n_boot: int = N_BOOT, rng_seed: int = RNG_SEED) -> pd.DataFrame:
    """Per (setting, criterion): the median of eta_max over seeds (on log-LR, censored seeds included at
    their rank) and a percentile bootstrap interval over SEEDS (`n_boot` resamples, fixed `rng_seed`).

    `estimate_censored` says when the median itself is a censored seed's bound (the estimate is then
    "< estimate" or ">= estimate"); a CI edge at a censored seed is that range edge. With one seed the
    interval is that seed's value: read `n_seeds`.
    """
    keys = list(keys) if keys is not None else setting_keys(per_seed)
    rows = []
    for values, g in _groups(per_seed, [*keys, "criterion"]):
        v = _log_values(g)
        low_b, high_b = _bounds(g)
        est, est_c = _exp(_median(v), low_b, high_b)
        lo, hi = _interval(_boot_medians(v, n_boot, np.random.default_rng(rng_seed)), level)
        censored = g[g["censored"].ne("")]
        rows.append({**dict(zip([*keys, "criterion"], values)), "n_seeds": len(g),
                     "n_censored_below": int(g["censored"].eq("below").sum()),
                     "n_censored_above": int(g["censored"].eq("above").sum()),
                     "censored_seeds": " ".join(f"{s}:{c}" for s, c in zip(censored["seed"], censored["censored"])),
                     "estimate": est, "estimate_censored": est_c, "ci_low": _exp(lo, low_b, high_b)[0],
                     "ci_high": _exp(hi, low_b, high_b)[0], "ci_level": level,
                     "n_probes": int(g["n_probes"].sum())})
    return pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])


def ratio(a: pd.DataFrame, b: pd.DataFrame, level: float = CI_LEVEL, n_boot: int = N_BOOT,
          rng_seed: int = RNG_SEED) -> dict[str, Any]:
    """eta_max(b) / eta_max(a), medians over seeds, with a bootstrap CI resampling each side's seeds
    independently. `resolved` = the interval excludes 1 (a censored side may make an edge infinite)."""
    va, vb = _log_values(a), _log_values(b)
    rng = np.random.default_rng(rng_seed)
    with np.errstate(invalid="ignore"):
        est = _median(vb) - _median(va)
        reps = _boot_medians(vb, n_boot, rng) - _boot_medians(va, n_boot, rng)
    lo, hi = _interval(reps, level)
    resolved = bool(not math.isnan(lo) and (lo > 0 or hi < 0))
    back = lambda x: math.nan if math.isnan(x) else _lr(math.exp(x))  # noqa: E731
    return {"n_seeds": len(vb), "n_seeds_baseline": len(va), "ratio": back(est), "ci_low": back(lo),
            "ci_high": back(hi), "ci_level": level, "resolved": resolved}


def compare(per_seed: pd.DataFrame, keys: Sequence[str] | None = None, vary: Sequence[str] = ("warmup", "warmup_steps"),
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
        base, others = g[is_base], g[~is_base]
        vary_here = [k for k in keys if k in vary]
        if base.empty or others.empty:
            continue
        base_label = ", ".join(f"{k}={base[k].iloc[0]}" for k in vary_here)
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
            ref = lrs
        if len(lrs) != len(ref) or not all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(lrs, ref)):
            raise GridMismatch(f"LR sensitivity compares settings on one fixed grid, but {_label(keys, values)} "
                               f"has lrs {_grid_text(lrs)} and another setting {_grid_text(ref)}; run the same "
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
VARY = ("warmup", "warmup_steps")


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
    for col in ("censored", "estimate_censored", "censored_seeds"):
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df
