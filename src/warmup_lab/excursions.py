"""The plain rule's divergence patience, checked against what the runs did.

A run diverges on a non-finite loss at once, or when its loss stays above the ceiling (factor x l0, or
`detect.divergence.ceiling`) for `patience` consecutive steps (detectors.DivergenceDetector). A patience
shorter than an excursion that would have come back stops a run that could still recover (issue 13).
From every run's per-step losses this module measures the excursions above its ceiling: the longest one
that came back below it, and a final one still above it when the run ended or was stopped. The report
prints the longest that came back beside the patience: when it is well below, the patience stopped
nothing that was recovering, as far as these runs can show.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from warmup_lab.detectors import divergence_limit
from warmup_lab.summary import SETTING_KEYS

COLUMNS = ["task", "warmup", "warmup_steps", "target_lr", "seed", "status", "ceiling", "patience",
           "longest_recovered", "final_streak", "nonfinite"]


def streaks(loss: np.ndarray, limit: float) -> tuple[int, int, bool]:
    """(longest run of steps above `limit` that ended below it, the run still above it at the end, whether
    the last loss is non-finite). A non-finite loss counts as above."""
    above = ~(np.asarray(loss, dtype=float) <= limit)  # nan and inf are above
    longest, current = 0, 0
    for flag in above:
        if flag:
            current += 1
        else:
            longest, current = max(longest, current), 0
    nonfinite = bool(len(loss)) and not math.isfinite(float(loss[-1]))
    return longest, current, nonfinite


def _ceiling(row: pd.Series) -> float:
    """The run's divergence ceiling, as its detector computed it (detectors.divergence_limit)."""
    ceiling = pd.to_numeric(pd.Series([row.get("detect.divergence.ceiling")]), errors="coerce").iloc[0]
    return divergence_limit(float(ceiling) if pd.notna(ceiling) else None,
                            float(row.get("detect.divergence.factor", math.nan)), float(row.get("init_loss", math.nan)))


def _within_task(res: pd.DataFrame) -> list[str]:
    """Setting keys besides warmup that take more than one value within one task (e.g. norm: Pre- vs
    Post-LN): they name a run's row too, after `task`."""
    others = [k for k in SETTING_KEYS if k not in COLUMNS and k in res.columns]
    by_task = res.groupby("task", dropna=False) if "task" in res.columns else [(None, res)]
    return [k for k in others if any(g[k].astype(str).nunique() > 1 for _, g in by_task)]


def table(res: pd.DataFrame, curves: object) -> pd.DataFrame:
    """One row per run whose per-step losses are at hand (curves: archive.Curves)."""
    extra = _within_task(res)
    columns = [COLUMNS[0], *extra, *COLUMNS[1:]]
    rows = []
    for _, row in res.iterrows():
        curve = curves.get(row) if curves is not None else None  # type: ignore[attr-defined]
        if curve is None or "loss" not in curve or not len(curve):
            continue
        limit = _ceiling(row)
        if not math.isfinite(limit):
            continue
        longest, final, nonfinite = streaks(curve.sort_values("step")["loss"].to_numpy(), limit)
        rows.append({**{k: row.get(k) for k in columns[:6 + len(extra)]}, "ceiling": limit,
                     "patience": row.get("detect.divergence.patience"), "longest_recovered": longest,
                     "final_streak": final, "nonfinite": nonfinite})
    return pd.DataFrame(rows, columns=columns)


def section(res: pd.DataFrame, curves: object, out: Path, write_csv) -> list[str]:
    """excursions.csv and the report's lines: per task, the longest excursion that came back vs the patience."""
    found = table(res, curves)
    if found.empty:
        return ["## Excursions above the divergence ceiling", "",
                "_Skipped: no per-step losses at hand for these runs._", ""]
    write_csv(found, out / "excursions.csv")
    md = ["## Excursions above the divergence ceiling", "",
          "Per run, from its per-step training loss: the longest stretch of steps above the plain rule's "
          "divergence ceiling (`detect.divergence`: factor x l0) that came back below it, against the patience "
          "(the steps above it after which a run is stopped as diverged). A run that went non-finite is "
          "stopped at once. (`excursions.csv`)", ""]
    for task, g in found.groupby("task", sort=True):
        top = g.loc[g["longest_recovered"].idxmax()]
        patience = sorted({int(p) for p in pd.to_numeric(g["patience"], errors="coerce").dropna()})
        by_patience = int(((g["status"] == "diverged") & ~g["nonfinite"]).sum())
        by_nonfinite = int(((g["status"] == "diverged") & g["nonfinite"]).sum())
        named = "".join(f"{k}={top[k]}, " for k in found.columns[1:found.columns.get_loc("warmup")])
        where = (f" ({named}{top['warmup']}@{int(top['warmup_steps'])}, lr {top['target_lr']:g}, seed {int(top['seed'])})"
                 if top["longest_recovered"] > 0 else "")
        md.append(f"- **{task}**: longest excursion that came back: {int(top['longest_recovered'])} steps{where}; "
                  f"patience {', '.join(map(str, patience)) or 'unknown'} steps; {len(g)} runs, diverged: "
                  f"{by_nonfinite} non-finite, {by_patience} by the patience.")
    return md + [""]
