"""The report: every run summary of one or more sweeps, as tidy tables, pivots and figures.

Reads only local files (DESIGN.md section 7, pitfall 3): each run's summary.json (and, for the figures,
metrics.csv), plus a max-stable-LR search's eta_max.csv where one exists. A corrupt or missing summary
is skipped with a warning that names it, so one bad run never costs the report. Definitions (statuses,
LR sensitivity) come from runs.py and metrics.py, so the report measures what the trainer measured.

    python -m warmup_lab.report <sweep dirs...> [--out results/<experiment>] [--experiment NAME]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from warmup_lab import runs
from warmup_lab.errors import ConfigError, exit_on_user_error
from warmup_lab.stability import lr_sensitivity

# The config values a report pivots on (trainer.key_values); a "setting" is all of them but LR and seed.
SETTING_KEYS = runs.SETTING_KEYS
TABLE_KEYS = tuple(k for k in SETTING_KEYS if k != "warmup_steps")  # one table each; length is its rows
ETA_FILE, ETA_SUMMARY_FILE, SEARCH_FILE = "eta_max.csv", "eta_max_summary.csv", "search.json"
# Columns of a search's eta_max.csv that are results, not setting keys.
ETA_RESULT_COLS = {"eta_max", "lo", "hi", "n_probes", "non_monotone", "bounded", "seed", "resolution", "probes",
                   "status", "lower", "upper", "below_min", "above_max", "done", "errors_as_unstable",
                   "non_monotone_probes", "start_lr", "bracket_factor", "min_lr", "max_lr", "range", "median",
                   "geomean", "min", "max", "spread_res", "all_done", "per_seed", "source"}
_NONFINITE = {"nan": math.nan, "NaN": math.nan, "inf": math.inf, "Infinity": math.inf,
              "-inf": -math.inf, "-Infinity": -math.inf}


class NoRunsError(ConfigError):
    """No usable summary anywhere: a user error (exit 2), with the fix in the one line."""

    def __init__(self, dirs: Sequence[Path]):
        super().__init__("sweep_dirs", [str(d) for d in dirs], "no run summaries")
        self.dirs = dirs

    def __str__(self) -> str:
        return f"no run summaries under {' '.join(map(str, self.dirs))}; run a sweep first (make sweep)"


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# -- loading ---------------------------------------------------------------------------------------
def _floats(value: Any) -> Any:
    """Undo runs._json_safe: "nan"/"inf" strings back to floats, so columns come out numeric."""
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def _read(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The summary, or None and why not (runs.read_summary says only None)."""
    path = run_dir / runs.SUMMARY_FILE
    if not path.exists():
        return None, "missing (run not finished?)"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        return None, f"unreadable JSON ({type(err).__name__})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    if "status" not in data:
        return None, "no 'status' field"
    return data, ""


def load_runs(dirs: Iterable[Path]) -> pd.DataFrame:
    """One row per run (nested dicts flattened, lists JSON-encoded or dropped), duplicates kept once."""
    records = []
    for run_dir in runs.find_run_dirs([Path(d) for d in dirs]):
        summary, why = _read(run_dir)
        if summary is None:
            warn(f"skipping {run_dir / runs.SUMMARY_FILE}: {why}")
            continue
        records.append({**_floats(summary), "run_path": str(run_dir)})
    if not records:
        return pd.DataFrame()
    df = pd.json_normalize(records)
    for col in list(df.columns):
        lists = df[col].map(lambda v: isinstance(v, (list, tuple)))
        if lists.any():  # per-event lists (spikes, catapults, sharpness) belong to the run dir, not here
            if df[col][lists].map(lambda v: any(isinstance(x, dict) for x in v)).any():
                df = df.drop(columns=col)
            else:
                df[col] = df[col].map(lambda v: json.dumps(v) if isinstance(v, (list, tuple)) else v)
    # The same run reached twice (nested or repeated dirs): keep one, a finished one if any.
    key = df["config_hash"].fillna(df["run_path"]) if "config_hash" in df else df["run_path"]
    order = (~df["status"].isin(runs.FINISHED_STATUSES)).astype(int)
    df = df.assign(_key=key, _order=order).sort_values(["_order", "run_path"], kind="stable")
    df = df.drop_duplicates("_key").drop(columns=["_key", "_order"]).sort_values("run_path").reset_index(drop=True)
    for k in SETTING_KEYS + ("target_lr", "seed", "steps_run", "init_loss", "final_train_loss", "diverged_step"):
        if k not in df:
            df[k] = np.nan
    df["warmup_steps"] = pd.to_numeric(df["warmup_steps"], errors="coerce").fillna(0)  # no warmup = length 0
    for k in TABLE_KEYS:
        df[k] = df[k].where(df[k].notna(), "-")
    return df


def results(df: pd.DataFrame) -> pd.DataFrame:
    """Finished runs only (completed, diverged, failed_to_train): errors are not results."""
    return df[df["status"].isin(runs.FINISHED_STATUSES)].copy()


def varying(df: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    return [k for k in keys if k in df and df[k].astype(str).nunique() > 1]


def group_keys(df: pd.DataFrame) -> list[str]:
    """Keys one table is split on: task, optimizer and shape always, other setting keys when they vary."""
    return [k for k in TABLE_KEYS if k in ("task", "optimizer", "warmup") or k in varying(df, [k])]


def label(keys: Sequence[str], values: Any) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text.replace("task=", "").replace("optimizer=", "")).strip("_") or "all"


# -- criteria --------------------------------------------------------------------------------------
def criteria(df: pd.DataFrame) -> str:
    """The detect config the runs used, printed with every table (DESIGN.md section 2)."""
    def val(col: str) -> str:
        col = f"detect.{col}"
        if col not in df or df[col].isna().all():
            return "?"
        vals = sorted({f"{v:g}" if isinstance(v, float) else str(v) for v in df[col].dropna()})
        return vals[0] if len(vals) == 1 else "{" + ", ".join(vals) + "}"

    ceiling = val("divergence.ceiling")
    limit = f"loss > {val('divergence.factor')} x l0" if ceiling in ("?", "None") else f"loss > {ceiling}"
    return (f"_Criteria: stable = status `completed` (neither `diverged` nor `failed_to_train`). "
            f"Spike: loss > {val('spike.ratio')} x median of the previous {val('spike.window')} losses "
            f"(burn-in {val('spike.burn_in')}). Divergence: non-finite loss, or {limit} for "
            f"{val('divergence.patience')} consecutive steps. Failed to train: final loss >= l0 - "
            f"{val('failed.loss_margin')}, or final accuracy <= chance + {val('failed.acc_margin')}"
            + ("" if val("failed.min_acc") in ("?", "None") else f", or final accuracy < {val('failed.min_acc')}")
            + "._")


# -- tables ----------------------------------------------------------------------------------------
def metric_for(df: pd.DataFrame) -> str:
    """Accuracy for classification; eval loss for language modeling (or where no accuracy exists)."""
    kind = df["task_info.kind"].dropna().astype(str) if "task_info.kind" in df else pd.Series(dtype=str)
    has_acc = "final_eval_acc" in df and df["final_eval_acc"].notna().any()
    if (kind == "lm").any() or not has_acc:
        return "final_eval_loss"
    return "final_eval_acc"


def _cell(values: pd.Series, diverged: int) -> str:
    vals = values.dropna()
    text = "-" if vals.empty else f"{vals.mean():.4g}"
    if len(values) > 1:
        text += f" ± {vals.std():.2g}" if len(vals) > 1 else ""
        text += f" (n={len(values)})"
    return text + (f" [{diverged} div]" if diverged else "")


def accuracy_tables(res: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, pd.DataFrame]]:
    """Per (task, optimizer, shape, ...): (title, metric, tidy cells, display pivot warmup x LR)."""
    out = []
    keys = group_keys(res)
    for values, g in res.groupby(keys, sort=True):
        metric = metric_for(g)
        if metric not in g:
            continue
        cells = (g.assign(div=g["status"].eq(runs.DIVERGED), failed=g["status"].eq(runs.FAILED))
                 .groupby(["warmup_steps", "target_lr"])
                 .agg(mean=(metric, "mean"), std=(metric, "std"), n=(metric, "size"),
                      n_diverged=("div", "sum"), n_failed=("failed", "sum")).reset_index())
        text = g.groupby(["warmup_steps", "target_lr"]).apply(
            lambda c: _cell(c[metric], int(c["status"].eq(runs.DIVERGED).sum())), include_groups=False)
        pivot = text.unstack("target_lr").rename_axis(index="warmup_steps", columns=None)
        pivot.columns = [f"lr={c:.3g}" for c in pivot.columns]
        pivot.index = [f"{int(i)}" if float(i).is_integer() else f"{i:g}" for i in pivot.index]
        pivot.index.name = "warmup_steps"
        out.append((label(keys, values), metric, cells.assign(**dict(zip(keys, values))), pivot))
    return out


def rates(res: pd.DataFrame) -> pd.DataFrame:
    """Share of runs diverged / failed_to_train per (task, optimizer, shape, warmup length)."""
    keys = group_keys(res) + ["warmup_steps"]
    g = res.assign(diverged=res["status"].eq(runs.DIVERGED), failed_to_train=res["status"].eq(runs.FAILED),
                   completed=res["status"].eq(runs.COMPLETED))
    return g.groupby(keys).agg(n=("status", "size"), diverged_rate=("diverged", "mean"),
                               failed_rate=("failed_to_train", "mean"),
                               completed_rate=("completed", "mean")).reset_index()


def spikes(res: pd.DataFrame) -> pd.DataFrame:
    keys = group_keys(res) + ["warmup_steps"]
    cols = {c: res[c] if c in res else np.nan for c in ("spike_count", "max_spike_ratio", "catapult_count")}
    g = res.assign(**{c: pd.to_numeric(v, errors="coerce") for c, v in cols.items()})
    return g.groupby(keys).agg(n=("status", "size"), mean_spike_count=("spike_count", "mean"),
                               max_spike_ratio=("max_spike_ratio", "max"),
                               mean_catapult_count=("catapult_count", "mean")).reset_index()


def sensitivity(res: pd.DataFrame) -> pd.DataFrame:
    """metrics.lr_sensitivity per (setting, seed) over its target-LR range, then mean over seeds."""
    keys = group_keys(res) + ["warmup_steps"]
    rows = []
    ok = res.dropna(subset=["init_loss", "target_lr"])
    for values, g in ok.groupby(keys + ["seed"]):
        if g["target_lr"].nunique() < 2:
            continue
        g = g.sort_values("target_lr")
        s = lr_sensitivity(g["target_lr"], g["final_train_loss"].astype(float), g["init_loss"].astype(float))
        rows.append({**dict(zip(keys + ["seed"], values)), "lr_min": g["target_lr"].min(),
                     "lr_max": g["target_lr"].max(), "n_lrs": g["target_lr"].nunique(), "sensitivity": s})
    per_seed = pd.DataFrame(rows)
    if per_seed.empty:
        return per_seed
    return per_seed.groupby(keys).agg(lr_min=("lr_min", "min"), lr_max=("lr_max", "max"), n_lrs=("n_lrs", "max"),
                                      sensitivity=("sensitivity", "mean"), std=("sensitivity", "std"),
                                      n_seeds=("sensitivity", "size")).reset_index()


def derive_eta_max(res: pd.DataFrame) -> pd.DataFrame:
    """eta_max per (setting, seed) from a grid: the largest completed target LR; flags non-monotone grids.

    `bounded` = an unstable LR lies above eta_max (else eta_max is only a lower bound: the grid ends
    stable); `non_monotone` = some unstable LR lies below a stable one (reported, not hidden);
    `below_min` = no LR of the grid is stable (eta_max < the smallest, `hi`).
    """
    keys = group_keys(res) + ["warmup_steps"]
    rows = []
    for values, g in res.dropna(subset=["target_lr"]).groupby(keys + ["seed"]):
        stable = g.groupby("target_lr")["status"].apply(lambda s: s.isin(runs.STABLE_STATUSES).all()).sort_index()
        good, bad = stable.index[stable.values], stable.index[~stable.values]
        eta = good.max() if len(good) else np.nan
        above = bad[bad > eta] if len(good) else bad
        rows.append({**dict(zip(keys + ["seed"], values)), "eta_max": eta,
                     "lo": eta, "hi": above.min() if len(above) else np.nan, "n_probes": len(stable),
                     "non_monotone": bool(len(good) and len(bad) and bad.min() < good.max()),
                     "bounded": bool(len(above)), "below_min": not len(good)})
    return pd.DataFrame(rows)


def _canonical(col: str) -> str:
    """A search's override key (`schedule.warmup_steps`, `optimizer`) to the report's name for it."""
    last = re.split(r"[.=/]", col)[-1]
    return {"steps": "train_steps", "name": col.split(".")[0]}.get(last, last) if last in (
        *SETTING_KEYS, "steps", "name") else col


def read_eta_outputs(dirs: Iterable[Path]) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any]]:
    """The search's eta_max.csv rows (setting keys renamed to the report's), its summary and search.json."""
    frames, summaries, meta = [], [], {}
    for d in dirs:
        for path in sorted(Path(d).rglob(ETA_FILE)):
            try:
                frames.append(pd.read_csv(path).assign(source=str(path.parent)))
            except (OSError, ValueError, pd.errors.ParserError) as err:
                warn(f"skipping {path}: {type(err).__name__}: {err}")
        for path in sorted(Path(d).rglob(ETA_SUMMARY_FILE)):
            try:
                summaries.append(pd.read_csv(path))
            except (OSError, ValueError, pd.errors.ParserError) as err:
                warn(f"skipping {path}: {type(err).__name__}: {err}")
        for path in sorted(Path(d).rglob(SEARCH_FILE)):
            try:
                data = json.loads(path.read_text())
                meta.update({k: v for k, v in data.items() if isinstance(v, (str, int, float, bool))}
                            if isinstance(data, dict) else {})
            except (OSError, ValueError) as err:
                warn(f"skipping {path}: {type(err).__name__}")
    if not frames:
        return pd.DataFrame(), None, meta
    eta = pd.concat(frames, ignore_index=True)
    if "eta_max" not in eta:
        warn(f"ignoring {ETA_FILE}: no eta_max column")
        return pd.DataFrame(), None, meta
    keys = eta_setting_keys(eta)
    eta = eta.rename(columns={c: _canonical(c) for c in keys})
    summary = pd.concat(summaries, ignore_index=True) if summaries else None
    return eta, summary, meta


def eta_setting_keys(eta: pd.DataFrame) -> list[str]:
    """Every column that is not a search result (known names, eta_max*, n_*, true/false flags)."""
    def flag(col: str) -> bool:
        vals = set(eta[col].dropna().astype(str).str.lower())
        return bool(vals) and vals <= {"true", "false"}

    keys = [c for c in eta.columns if c not in ETA_RESULT_COLS and not c.startswith(("eta_max", "n_")) and not flag(c)]
    resolved = [c for c in keys if c in SETTING_KEYS]
    # Searches over the real trainer record each setting's resolved values (task, warmup, warmup_steps, ...);
    # those identify it, and its raw overrides (`warmup_setting=linear@15`, labels) would only split it.
    return resolved or keys


def aggregate_eta(eta: pd.DataFrame) -> pd.DataFrame:
    """Over seeds: geometric mean (eta_max lives on a log scale), min, max, and any flags."""
    keys = eta_setting_keys(eta)
    e = eta.assign(log_eta=np.log(pd.to_numeric(eta["eta_max"], errors="coerce").where(lambda v: v > 0)))
    agg: dict[str, Any] = {"n_seeds": ("eta_max", "size"), "eta_max_geomean": ("log_eta", "mean"),
                           "eta_max_min": ("eta_max", "min"), "eta_max_max": ("eta_max", "max")}
    for flag, how in (("non_monotone", "any"), ("bounded", "all"), ("below_min", "any"), ("above_max", "any")):
        if flag in e:
            e[flag] = e[flag].astype(str).str.lower().isin(("true", "1", "1.0"))
            agg[f"{how}_{flag}"] = (flag, how)
    out = e.groupby(keys, dropna=False).agg(**agg).reset_index() if keys else e.agg(**agg).T
    out["eta_max_geomean"] = np.exp(out["eta_max_geomean"])
    return out


# -- the report ------------------------------------------------------------------------------------
def _md(df: pd.DataFrame, index: bool = False) -> str:
    return df.to_markdown(index=index, floatfmt=".4g") if not df.empty else "_(no rows)_"


def experiment_name(df: pd.DataFrame, dirs: Sequence[Path]) -> str:
    names = df["experiment"].dropna().astype(str).unique() if "experiment" in df else []
    return str(names[0]) if len(names) else Path(dirs[0]).resolve().name


def build_report(dirs: Sequence[Path | str], out: Path | str | None = None, experiment: str | None = None,
                 log_lr: bool = False) -> Path:
    """Write runs.csv, table_*.csv, report.md and the PNGs; returns the output folder."""
    from warmup_lab import plots

    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if not d.is_dir():
            warn(f"{d} is not a directory")
    df = load_runs(dirs)
    if df.empty:
        raise NoRunsError(dirs)
    experiment = experiment or experiment_name(df, dirs)
    out = Path(out) if out is not None else Path("results") / experiment
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "runs.csv", index=False)
    res, crit = results(df), criteria(df)
    md = [f"# Report: {experiment}", "", f"Sweep dirs: {', '.join(f'`{d}`' for d in dirs)}", ""]

    # Runs header
    wall = pd.to_numeric(df.get("wall_s"), errors="coerce").sum() if "wall_s" in df else 0.0
    md += ["## Runs", "", f"{len(df)} runs ({len(res)} finished), total wall time {wall:.1f} s.", "",
           _md(df["status"].value_counts().rename_axis("status").reset_index()), "",
           _md(df["task"].value_counts().rename_axis("task").reset_index()), ""]
    errors = df[~df["status"].isin(runs.FINISHED_STATUSES)]
    if not errors.empty:
        cols = [c for c in ("status", "config_hash", "steps_run", "error", "run_path") if c in errors]
        md += ["### Runs that did not finish (not in the results below)", "", _md(errors[cols]), ""]

    # Final metric over target LR x warmup length
    md += ["## Final metric over target LR x warmup length", "", crit, "",
           "Mean over seeds (± std, n when more than one seed); `[k div]` = k seeds diverged.", ""]
    tables = accuracy_tables(res)
    if tables:
        pd.concat([t[2] for t in tables], ignore_index=True).to_csv(out / "table_final_metric.csv", index=False)
    for title, metric, cells, pivot in tables:
        md += [f"### {title} ({metric})", "", _md(pivot, index=True), ""]
        md += [plots.note_or_link(plots.heatmap(cells, title, metric, out))]
        md += [""]

    # eta_max
    md += ["## Maximum stable LR (eta_max)", "", crit, ""]
    eta, eta_summary, meta = read_eta_outputs(dirs)
    if not eta.empty:
        md += ["From the max-stable-LR search (`eta_max.csv`)" + (
            ": " + ", ".join(f"{k}={v}" for k, v in meta.items()) if meta else "") + ".", ""]
    elif res["target_lr"].nunique() >= 2:
        eta = derive_eta_max(res)
        md += ["No search outputs: derived from the grid (largest target LR with status `completed`, per "
               "seed; `bounded` = an unstable LR lies above it, else it is only a lower bound; "
               "`non_monotone` = an unstable LR lies below a stable one; "
               "`below_min` = no LR of the grid is stable).", ""]
    if eta.empty:
        md += ["_No eta_max: no search outputs and a single target LR._", ""]
    else:
        eta.drop(columns=["source"], errors="ignore").to_csv(out / "table_eta_max.csv", index=False)
        agg = eta_summary if eta_summary is not None else aggregate_eta(eta)
        agg.to_csv(out / "table_eta_max_summary.csv", index=False)
        md += ["### Aggregate over seeds", "", _md(agg), "", "### Per seed", "",
               _md(eta.drop(columns=["source"], errors="ignore")), ""]
    md += [plots.note_or_link(plots.eta_max_vs_warmup(eta, eta_setting_keys(eta) if not eta.empty else [], out)), ""]

    # Divergence rate, spikes, sensitivity
    md += ["## Divergence and failure rates", "", crit, ""]
    r = rates(res)
    r.to_csv(out / "table_rates.csv", index=False)
    md += [_md(r), ""]
    md += ["## Loss spikes and catapults", "", crit, ""]
    s = spikes(res)
    s.to_csv(out / "table_spikes.csv", index=False)
    md += [_md(s), ""]
    md += ["## LR sensitivity", "", crit, "",
           "Wortsman et al. 2023 (`warmup_lab.metrics.lr_sensitivity`): over the target-LR range, mean of "
           "min(final train loss, init loss) minus the best final train loss; per seed, then mean over seeds.", ""]
    sens = sensitivity(res)
    if sens.empty:
        md += ["_Skipped: needs at least two target LRs per setting._", ""]
    else:
        sens.to_csv(out / "table_lr_sensitivity.csv", index=False)
        md += [_md(sens), ""]

    # Curves
    md += ["## LR and loss curves", ""]
    curve_keys = [k for k in group_keys(res) if k != "warmup"]  # one figure per group, a panel per shape
    for keys_values, g in res.groupby(curve_keys, sort=True):
        title = label(curve_keys, keys_values)
        md += [f"### {title}", "", plots.note_or_link(plots.lr_curves(g, title, out, log_y=log_lr)), "",
               plots.note_or_link(plots.loss_curves(g, title, out)), ""]
    (out / "report.md").write_text("\n".join(md).rstrip() + "\n")
    return out


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m warmup_lab.report", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", type=Path, help="sweep directories (searched recursively for runs)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default results/<experiment>)")
    p.add_argument("--experiment", default=None, help="name (default: the summaries' experiment or the dir name)")
    p.add_argument("--log-lr", action="store_true", help="log-scale y axis for the LR curves")
    args = p.parse_args(argv)
    out = build_report(args.dirs, args.out, args.experiment, log_lr=args.log_lr)
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
