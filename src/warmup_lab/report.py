"""The report: every run summary of one or more sweeps, as tidy tables, pivots and figures.

Reads only local files: each run's summary.json (and, for the figures, metrics.csv). A corrupt or
missing summary is skipped with a warning that names it, so one bad run never costs the report. eta_max,
its criteria and statistics come from warmup_lab.stability over the same summaries the max-stable-LR
search read, so a grid sweep and a search give their answers by one rule (docs/definitions.md).

    python -m warmup_lab.report <sweep dirs...> [--out results/<experiment>] [--experiment NAME]
        [--criteria NAME ...]   (default: stability.DEFAULT_CRITERIA)
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

from warmup_lab import archive, excursions, runs, stability, thresholds
from warmup_lab.errors import ConfigError, exit_on_user_error, output_error
from warmup_lab.summary import KEY_VALUES, SETTING_KEYS, read_summary

TABLE_KEYS = tuple(k for k in SETTING_KEYS if k != "warmup_steps")  # one table each; length is its rows


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
def load_runs(dirs: Iterable[Path]) -> pd.DataFrame:
    """One row per run (nested dicts flattened, lists JSON-encoded or dropped), duplicates kept once."""
    records = []
    for run_dir in runs.find_run_dirs([Path(d) for d in dirs]):
        summary = read_summary(run_dir, warn)
        if summary is not None:
            records.append({**summary, "run_path": str(run_dir)})
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
    for k in KEY_VALUES + ("steps_run", "init_loss", "final_train_loss", "diverged_step"):
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


# -- what the runs were judged by ------------------------------------------------------------------
def detect_text(df: pd.DataFrame) -> str:
    """The live detectors' settings the runs used (docs/definitions.md), printed with every table."""
    def val(col: str) -> str:
        col = f"detect.{col}"
        if col not in df or df[col].isna().all():
            return "?"
        vals = sorted({f"{v:g}" if isinstance(v, float) else str(v) for v in df[col].dropna()})
        return vals[0] if len(vals) == 1 else "{" + ", ".join(vals) + "}"

    ceiling = val("divergence.ceiling")
    limit = f"loss > {val('divergence.factor')} x l0" if ceiling in ("?", "None") else f"loss > {ceiling}"
    heldout = val("failed.heldout.min_acc")
    return (f"_Status (the plain rule, written by the trainer): `diverged` = non-finite loss, or {limit} for "
            f"{val('divergence.patience')} consecutive steps; `failed_to_train` = final train loss >= l0 - "
            f"{val('failed.loss_margin')}"
            + ("" if heldout in ("?", "None") else f", or held-out accuracy < {heldout} (opted in: "
               f"{val('failed.heldout.why')})")
            + f". Spike event: consecutive steps with loss > {val('spike.ratio')} x the median of the previous "
            f"{val('spike.window')} losses (l0 while they fill), reference floored at {val('spike.floor')} x l0._")


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
    """Spike events (a run of consecutive spike steps is one) and catapults per setting, n beside them."""
    keys = group_keys(res) + ["warmup_steps"]
    cols = {c: res[c] if c in res else np.nan for c in ("spike_events", "max_spike_ratio", "first_spike_step",
                                                         "catapult_count")}
    g = res.assign(**{c: pd.to_numeric(v, errors="coerce") for c, v in cols.items()})
    return g.groupby(keys).agg(n=("status", "size"), mean_spike_events=("spike_events", "mean"),
                               max_spike_ratio=("max_spike_ratio", "max"),
                               earliest_spike_step=("first_spike_step", "min"),
                               mean_catapult_count=("catapult_count", "mean")).reset_index()


# -- eta_max, P(stable), comparisons, LR sensitivity (all from warmup_lab.stability) -----------------
_fmt = stability.bound_text


def _interval(row: pd.Series, est: str = "estimate", lo: str = "ci_low", hi: str = "ci_high") -> str:
    """`0.12 [0.1, 0.14]`, censored values marked."""
    return (f"{_fmt(row[est], row.get(est + '_censored', ''))} [{_fmt(row[lo], row[lo + '_censored'])}, "
            f"{_fmt(row[hi], row[hi + '_censored'])}]")


def _estimate(row: pd.Series) -> str:
    """`0.12 [0.1, 0.14] 94% n=5`: the median, its exact interval and that interval's exact coverage, censored
    values marked and the censored seeds listed."""
    text = f"{_interval(row)} {row['ci_coverage']:.0%} n={row['n_seeds']}"
    return text + (f" (censored {row['censored_seeds']})" if row["censored_seeds"] else "")


def _lr50(row: pd.Series) -> str:
    """`0.1 [0.08, 0.12]` of the logistic fit (n probes)."""
    if "lr50" not in row or pd.isna(row["lr50"]):
        return "-"
    row = row.copy()
    row["lr50_censored"] = row.get("lr50_censored") if isinstance(row.get("lr50_censored"), str) else ""
    return f"{_interval(row, 'lr50', 'lr50_low', 'lr50_high')} n={int(row['lr50_n'])}"


def _p(x: Any) -> str:
    return "-" if pd.isna(x) else f"{float(x):.3g}"


def _per_seed(row: pd.Series) -> str:
    if row["censored"] == "below":
        return _fmt(row["hi"], "below")
    return _fmt(row["eta_max"], row["censored"]) + (" *" if row["non_monotone"] else "")


def _wide(frame: pd.DataFrame, index: list[str], cell: Any, criteria: Sequence[str]) -> pd.DataFrame:
    """One row per `index`, a column per criterion (in the order given)."""
    shown = frame.assign(_cell=frame.apply(cell, axis=1))
    wide = shown.pivot_table(index=index, columns="criterion", values="_cell", aggfunc="first")
    return wide.reindex(columns=[c for c in criteria if c in wide.columns]).rename_axis(columns=None).reset_index()


def eta_section(res: pd.DataFrame, out: Path, criteria: Sequence[str], probes: pd.DataFrame, keys: list[str],
                found: dict[str, Any]) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """eta_max per seed and over seeds under every criterion, P(stable | LR), ratios to no warmup."""
    md = ["## Maximum stable LR (eta_max)", "", f"_Criteria: {stability.criteria_text(criteria)}_", "",
          "Per seed, eta_max = the largest stable LR below the first unstable LR above the smallest stable "
          "one, probes sorted by LR (docs/definitions.md#eta-max), the same rule for a grid and for the "
          "search's probes. Over seeds: "
          "the median (a censored seed enters at its bound and is flagged) with its "
          f"{stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval [x_(k), x_(n+1-k)] over seeds, printed "
          "with its exact coverage (below 90% only with fewer than 5 seeds; no resampling); `<`/`>=` = censored by "
          "the LR range. LR50: the LR where a logistic fit of P(stable | log LR) over every probe crosses 1/2, "
          f"with its {stability.CI_LEVEL:.0%} profile-likelihood interval (docs/definitions.md#statistics).", ""]
    if probes["lr"].nunique() < 2:
        return md + ["_No eta_max: a single target LR._", ""] + threshold_section(res, probes, keys, None, out), {}
    tables = stability.tables(probes, keys, criteria, declared=found["declared"], one_arm=found["one_arm"],
                              source_runs=found["source_runs"])
    stability.write_tables(out, tables)
    shown = [k for k in keys if k in ("warmup", "warmup_steps") or k in varying(probes, [k])]
    summary, per_seed = tables[stability.SUMMARY_FILE], tables[stability.ETA_FILE]
    md += [f"### Over seeds: median [{stability.INTERVAL_TEXT} interval] its coverage, n; a column per criterion", "",
           _md(_wide(summary, shown, _estimate, criteria)), "",
           f"### LR50 (logistic fit of P(stable | log LR)) [{stability.CI_LEVEL:.0%} profile interval], n probes", "",
           _md(_wide(summary, shown, _lr50, criteria)), "",
           "### Per seed (`*` = non-monotone: a stable LR above `hi`, or an unstable LR below every stable one)", "",
           _md(_wide(per_seed, [*shown, "seed"], _per_seed, criteria)), ""]
    md += compare_section(tables[stability.COMPARE_FILE], shown, found)
    ps = tables[stability.P_STABLE_FILE]
    md += ["### P(stable | LR): n_stable/n over every probe of every seed", ""]
    for name in criteria:
        g = ps[ps["criterion"] == name]
        cell = g.assign(_cell=g["n_stable"].astype(str) + "/" + g["n"].astype(str))
        wide = cell.pivot_table(index=shown, columns="lr", values="_cell", aggfunc="first").rename_axis(columns=None)
        wide.columns = [f"lr={c:.3g}" for c in wide.columns]
        md += [f"{stability.criterion(name).text}", "", _md(wide.fillna("").reset_index()), ""]
    return md + threshold_section(res, probes, keys, found, out), tables


def threshold_section(res: pd.DataFrame, probes: pd.DataFrame, keys: list[str], found: dict[str, Any] | None,
                      out: Path) -> list[str]:
    """The threshold sweep (warmup_lab.thresholds): its section, threshold_sweep.csv and its figure."""
    md, table = thresholds.section(probes, keys, res, found, out)
    if not table.empty:
        write_csv(table, out / thresholds.FILE)
    return md


def comparison_inputs(res: pd.DataFrame, probes: pd.DataFrame, keys: list[str], experiment: str, curves: Any,
                      dirs: Sequence[Path]) -> dict[str, Any]:
    """What the comparisons need beyond the runs: the preset's declarations, which settings are one arm
    (identical applied LR at every step), and the runs an LR was selected from (`selected_from`)."""
    try:
        found = stability.declared(experiment)
    except ValueError as err:
        raise ConfigError(f"conf/experiment/{experiment} comparisons", experiment, str(err)) from None
    per_setting: dict[Any, dict[float, np.ndarray]] = {}
    if curves is not None:
        for _, row in res.iterrows():
            sid = stability.setting_id(row.to_dict(), keys)
            lr = float(row["target_lr"])
            if lr in per_setting.get(sid, {}):
                continue
            m = curves.get(row)
            if m is not None and "lr" in m and len(m):
                per_setting.setdefault(sid, {})[lr] = pd.to_numeric(m["lr"], errors="coerce").to_numpy()
    sources, missing = [], []
    for name in found.selected_from:
        where = [Path(d).parent / name for d in dirs]
        frame = load_runs([w for w in where if w.is_dir()])
        if frame.empty:
            frame = archive.read_runs([w for w in where if w.is_dir()])
        (sources.append(frame) if not frame.empty else missing.append(f"{name} (looked in {', '.join(map(str, where))})"))
    return {"declared": found, "one_arm": stability.one_arm_pairs(per_setting),
            "source_runs": pd.concat(sources, ignore_index=True) if sources else None, "missing_sources": missing,
            "selected_from": found.selected_from}


def _comparison_view(comp: pd.DataFrame, cols: Sequence[str]) -> str:
    """A comparison table as Markdown: the ratio with its interval and coverage in one cell, p and p_holm."""
    view = comp.assign(ratio=comp.apply(lambda r: f"{_interval(r, 'ratio')} {r['ci_coverage']:.0%}", axis=1),
                       p=comp["p_value"].map(_p), p_holm=comp["p_holm"].map(_p))
    return _md(view[[c for c in cols if c in view]])


def compare_section(comp: pd.DataFrame, shown: list[str], found: dict[str, Any]) -> list[str]:
    md = ["### Comparisons: ratio of eta_max (b / baseline) over seeds", "",
          f"Each warmup vs no warmup, and every pair the preset declared (`comparisons:`). Ratio: Hodges-Lehmann "
          f"estimate with its {stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval (pairwise ratios, or "
          "Walsh averages of per-seed ratios when paired) and that interval's exact coverage. p: two-sided exact "
          "test, paired by seed where both settings hold the same seeds (Wilcoxon signed-rank; the sign test when "
          "a difference is censored), else Mann-Whitney; p_holm: Holm's adjustment over the declared comparisons "
          f"of one arm and criterion. Verdict: `resolved` = declared, >= {stability.MIN_SEEDS} seeds a side, "
          f"p_holm <= {stability.ALPHA}; `too few seeds`; `exploratory` = not declared before the runs; `one arm` = "
          "identical LR curves, not compared; `seeds reused` = the LR was selected on these seeds "
          "(docs/definitions.md#statistics).", ""]
    if found["selected_from"]:
        md += [f"_LR selected from: {', '.join(found['selected_from'])}"
               + (f"; runs not found: {'; '.join(found['missing_sources'])} (seed reuse not checked)"
                  if found["missing_sources"] else "") + "._", ""]
    if comp.empty:
        return md + ["_No comparison: no setting with warmup_steps = 0 beside others, and none declared._", ""]
    cols = [*shown, "criterion", "baseline", "n_seeds", "n_seeds_baseline", "ratio", "test", "p", "p_holm", "verdict"]
    return md + [_comparison_view(comp, cols), ""]


def loss_compare_section(probes: pd.DataFrame, keys: list[str], found: dict[str, Any],
                         out: Path) -> tuple[list[str], pd.DataFrame | None]:
    """The declared pairs compared on the final training loss at each target LR, where the preset asked
    for it (`compare_on: [final_train_loss]`): a question asked at one LR, where eta_max is censored."""
    path = out / stability.LOSS_COMPARE_FILE
    if "final_train_loss" not in found["declared"].compare_on:
        path.unlink(missing_ok=True)  # not asked for (any more): no stale table
        return [], None
    comp = stability.final_loss_compare(probes, keys, declared=found["declared"], one_arm=found["one_arm"],
                                        source_runs=found["source_runs"])
    write_csv(comp, path)
    md = ["## Comparisons of the final training loss (declared: `compare_on: [final_train_loss]`)", "",
          f"`{stability.LOSS_COMPARE_FILE}`. At each target LR, ratio = final training loss of b / of the baseline, "
          "per seed; a run without a finite final loss (diverged) enters as `>=` the largest finite loss at its "
          "LR. Statistics and verdicts as for eta_max below, Holm over the declared pairs at one LR. A ratio "
          "below 1 means b ended lower.", ""]
    if comp.empty:
        return md + ["_No comparison: the declared settings are not among the runs._", ""], comp
    shown = [k for k in keys if k in ("warmup", "warmup_steps") or k in varying(probes, [k])]
    cols = [*shown, "lr", "baseline", "n_seeds", "ratio", "test", "p", "p_holm", "verdict"]
    return md + [_comparison_view(comp, cols), ""], comp


def best_lr_section(res: pd.DataFrame, out: Path) -> list[str]:
    """Where each setting's optimum lies on its grid (stability.best_lr_table): inside, or at an edge."""
    probes = stability.probes_from_runs(res)
    path = out / stability.BEST_LR_FILE
    if probes.empty or probes["lr"].nunique() < 3:
        path.unlink(missing_ok=True)
        return []
    table = stability.best_lr_table(probes)
    write_csv(table, path)
    shown = [k for k in stability.setting_keys(probes) if k in ("task", "warmup", "warmup_steps")
             or k in varying(probes, [k])]
    view = table[[*dict.fromkeys([*shown, "best_lr", "median_final_train_loss", "n_seeds", "n_lrs_below",
                                  "n_lrs_above", "inside", "seed_best_lr_min", "seed_best_lr_max"])]]
    return ["## Best target LR (lowest median final training loss)", "",
            f"`{stability.BEST_LR_FILE}`: per setting, the LR of its grid with the lowest median final training "
            "loss over seeds (a diverged run counts as +inf); `inside` = at least 2 LRs of the grid below it and "
            "1 above, so the optimum is not the grid's edge; the per-seed best LRs' range beside it.", "",
            _md(view), ""]


def sensitivity_section(res: pd.DataFrame, out: Path) -> list[str]:
    md = ["## LR sensitivity", "", "Wortsman et al. 2023 (`warmup_lab.stability.lr_sensitivity`), on eval loss: "
          "over one fixed LR grid shared by every setting, mean of min(final eval loss, l0) minus the best; "
          "per seed, then mean over seeds.", ""]
    probes = stability.probes_from_runs(res)
    if probes.empty or probes["lr"].nunique() < 2:
        return md + ["_Skipped: needs at least two target LRs per setting._", ""]
    # Settings are compared within a task family (their warmups differ); families may use different grids.
    family = [k for k in ("task", "model", "optimizer") if k in probes]
    groups = list(probes.groupby(family, sort=True)) if family else [((), probes)]
    tables, skipped = [], []
    for values, g in groups:
        try:
            tables.append(stability.lr_sensitivity_table(g))
        except stability.GridMismatch as err:
            where = f" for {label(family, values)}" if len(groups) > 1 else ""
            skipped.append(f"_Skipped{where}: {err}._")
    sens = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if not sens.empty:
        write_csv(sens, out / stability.SENSITIVITY_FILE)
        md += [_md(sens), ""]
    return md + [line for s in skipped for line in (s, "")]


# -- the report ------------------------------------------------------------------------------------
def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Every digit of every float (read back with float_precision="round_trip", a rewrite is unchanged)."""
    df.to_csv(path, index=False, float_format=stability.FLOAT_FORMAT, lineterminator="\n")


def portable(df: pd.DataFrame, dirs: Sequence[Path]) -> pd.DataFrame:
    """runs.csv without machine paths: `run_path` and `run_dir` relative to the input folder that holds the
    run (a path outside every input keeps only its last part)."""
    roots = [Path(d).resolve() for d in dirs]

    def rel(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        path = Path(value).resolve()
        for root in roots:
            if path == root or root in path.parents:
                return path.relative_to(root).as_posix() or "."
        return Path(value).name if Path(value).is_absolute() else value

    out = df.copy()
    for col in ("run_path", "run_dir"):
        if col in out:
            out[col] = out[col].map(rel)
    return out


def _md(df: pd.DataFrame, index: bool = False) -> str:
    return df.to_markdown(index=index, floatfmt=".4g") if not df.empty else "_(no rows)_"


def experiment_name(df: pd.DataFrame, dirs: Sequence[Path]) -> str:
    names = df["experiment"].dropna().astype(str).unique() if "experiment" in df else []
    return str(names[0]) if len(names) else Path(dirs[0]).resolve().name


def _heatmap_groups(metric_tables: list[tuple[str, str, pd.DataFrame, pd.DataFrame]]
                    ) -> list[tuple[str, str, str, pd.DataFrame]]:
    """One heatmap per task family when its warmup shapes have distinct lengths (none@0 beside linear@10,
    30, 60: one map, T_w rows), else one per shape; each as (family, title, metric, cells)."""
    groups: dict[tuple[str, str], list[tuple[str, pd.DataFrame]]] = {}
    for title, metric, cells, _ in metric_tables:
        groups.setdefault((re.sub(r", warmup=[^,]+", "", title), metric), []).append((title, cells))
    out = []
    for (base, metric), parts in groups.items():
        lengths = [set(c["warmup_steps"]) for _, c in parts]
        if len(parts) > 1 and sum(map(len, lengths)) == len(set().union(*lengths)):
            out.append((base, base, metric, pd.concat([c for _, c in parts], ignore_index=True)))
        else:
            out += [(base, title, metric, cells) for title, cells in parts]
    return out


def figures_section(res: pd.DataFrame, metric_tables: list[tuple[str, str, pd.DataFrame, pd.DataFrame]],
                    eta_tables: dict[str, pd.DataFrame], out: Path, log_lr: bool = False,
                    criteria: Sequence[str] = stability.DEFAULT_CRITERIA, curves: Any = None) -> list[str]:
    """Every figure of the report, in one place (plots.py draws; this picks what to draw, with captions).

    Per-step curves (`curves`, archive.read_curves of the inputs, with the run directories' metrics.csv
    loaded in one pass) come from each run's metrics.csv when the run directory is here, else from an
    input's curves archive; `out/curves.csv.gz` and `out/curves.parquet` are rewritten from them:
    committed results redraw without re-training."""
    from warmup_lab import plots

    curves = curves if curves is not None else archive.Curves()
    md = ["## Figures", ""]
    if archive.write_curves(res, out, curves) is None:
        md += [f"_No per-step curves (no run directory here, and no {archive.CURVES_FILE} among the inputs): "
               "the loss and LR curve figures are skipped._", ""]
    per_seed = eta_tables.get(stability.ETA_FILE, pd.DataFrame())
    summary = eta_tables.get(stability.SUMMARY_FILE, pd.DataFrame())
    ps = eta_tables.get(stability.P_STABLE_FILE, pd.DataFrame())
    keys = stability.setting_keys(per_seed) if not per_seed.empty else []
    md += ["### eta_max vs warmup length", "", plots.note_or_link(
        plots.eta_max_vs_warmup(per_seed, summary, keys, criteria, out, lrs=ps),
        "A panel per task family and criterion. Grey dots: eta_max of one seed; down arrow: a seed with no "
        "stable LR in range, drawn at its first unstable LR; up arrow: every LR stable, drawn at the largest. "
        f"Black: median over seeds with its {stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval (hollow: the median is a "
        "censored bound). Criteria as in the eta_max tables above."), ""]
    md += ["### P(stable | LR)", "", plots.note_or_link(
        plots.p_stable_vs_lr(ps, keys, criteria, out),
        f"Share of runs (every seed) stable at each target LR with its Wilson {stability.CI_LEVEL:.0%} interval, a "
        f"line per warmup setting run at {plots.MIN_LRS} or more LRs, n runs per point."), ""]
    groups = _heatmap_groups(metric_tables)
    for family, title, metric, cells in groups:  # one colour scale per (task family, metric): maps compare
        shared = pd.concat([c["mean"] for f, _, m, c in groups if (f, m) == (family, metric)]).astype(float)
        shared = shared[np.isfinite(shared)]
        limits = (float(shared.min()), float(shared.max())) if len(shared) else None
        md += [f"### {title}: {metric}", "", plots.note_or_link(
            plots.heatmap(cells, title, metric, out, limits=limits),
            f"Mean {metric} over seeds; n = seeds per cell; hatched: k seeds diverged. One colour scale for "
            f"every {metric} map of this task family."), ""]
    curve_keys = [k for k in group_keys(res) if k != "warmup"]  # one figure per task family (and shape group)
    for keys_values, g in res.groupby(curve_keys, sort=True):
        title = label(curve_keys, keys_values)
        md += [f"### Curves: {title}", "", plots.note_or_link(
            plots.loss_curves(g, curves, title, out),
            "Training loss of every seed (thin) and the median over seeds (thick, while half of them run); "
            "orange dots: spike steps (consecutive dots are one spike event); red x: divergence."), "",
            plots.note_or_link(plots.lr_curves(g, curves, title, out, log_y=log_lr),
                               "The applied LR per warmup setting (the schedule does not depend on the seed)."), ""]
    return md


def build_report(dirs: Sequence[Path | str], out: Path | str | None = None, experiment: str | None = None,
                 log_lr: bool = False, criteria: Sequence[str] = stability.DEFAULT_CRITERIA) -> Path:
    """Write runs.csv, the tables (CSV), report.md and the PNGs; returns the output folder."""
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if not d.is_dir():
            warn(f"{d} is not a directory")
    df = load_runs(dirs)
    source = f"Sweep dirs: {', '.join(f'`{d}`' for d in dirs)}"
    if df.empty:  # committed results (runs.parquet/csv + curves), no run directories: redraw from them
        df = archive.read_runs(dirs)
        groups = sorted(df["sweep_group"].dropna().astype(str).unique()) if "sweep_group" in df else []
        made = f"; the runs were made in {', '.join(f'`sweeps/{g}`' for g in groups)}" if groups else ""
        source = (f"Rebuilt from the committed run tables and curves in {', '.join(f'`{d}`' for d in dirs)} "
                  f"(no run directory was read{made})")
    if df.empty:
        raise NoRunsError(dirs)
    experiment = experiment or experiment_name(df, dirs)
    out = Path(out) if out is not None else Path("results") / experiment
    out.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in owned_outputs(out)}
    runs_table = portable(df, dirs)
    write_csv(runs_table, out / "runs.csv")
    archive.write_runs_parquet(runs_table, out)  # the same table, typed
    res, crit = results(df), detect_text(df)
    md = [f"# Report: {experiment}", "", source, ""]

    wall = pd.to_numeric(df.get("wall_s"), errors="coerce").sum() if "wall_s" in df else 0.0
    md += ["## Runs", "", f"{len(df)} runs ({len(res)} finished), total wall time {wall:.1f} s.", "",
           _md(df["status"].value_counts().rename_axis("status").reset_index()), "",
           _md(df["task"].value_counts().rename_axis("task").reset_index()), ""]
    errors = df[~df["status"].isin(runs.FINISHED_STATUSES)]
    if not errors.empty:
        cols = [c for c in ("status", "config_hash", "steps_run", "error", "run_path") if c in errors]
        md += ["### Runs that did not finish (not in the results below; a search counted them unstable "
               "after its retries)", "", _md(errors[cols]), ""]

    md += ["## Final metric over target LR x warmup length", "", crit, "",
           "Mean over seeds (± std, n when more than one seed); `[k div]` = k seeds diverged.", ""]
    metric_tables = accuracy_tables(res)
    if metric_tables:
        write_csv(pd.concat([t[2] for t in metric_tables], ignore_index=True), out / "table_final_metric.csv")
    for title, metric, _, pivot in metric_tables:
        md += [f"### {title} ({metric})", "", _md(pivot, index=True), ""]

    # from the inputs (never from `out`); every run directory's metrics.csv read in one pass
    curves = archive.read_curves(dirs).load(df["run_path"] if "run_path" in df else [])
    probes = stability.probes_from_runs(res)
    keys = stability.setting_keys(probes)
    found = comparison_inputs(res, probes, keys, experiment, curves, dirs)
    eta_md, eta_tables = eta_section(res, out, criteria, probes, keys, found)
    loss_md, loss_comp = loss_compare_section(probes, keys, found, out)
    md += loss_md
    md += eta_md
    md += ["## Divergence and failure rates", "", crit, ""]
    r = rates(res)
    write_csv(r, out / "table_rates.csv")
    md += [_md(r), ""]
    md += ["## Loss spikes and catapults", "", crit, ""]
    s = spikes(res)
    write_csv(s, out / "table_spikes.csv")
    md += [_md(s), ""]
    md += excursions.section(res, curves, out, write_csv)
    md += best_lr_section(res, out)
    md += sensitivity_section(res, out)
    md += figures_section(res, metric_tables, eta_tables, out, log_lr, criteria, curves)
    head = 4  # title, blank, sweep dirs, blank: the answer goes right after them
    md[head:head] = answer_section(eta_tables.get(stability.COMPARE_FILE), loss_comp, found["declared"].compare_on)
    (out / "report.md").write_text("\n".join(md).rstrip() + "\n")
    remove_stale(out, before)
    return out


OWNED = ("*.csv", "*.png")  # what a report writes into its folder (besides report.md, runs.parquet, curves.*)


def owned_outputs(out: Path) -> list[Path]:
    return sorted(p for pattern in OWNED for p in out.glob(pattern) if p.is_file())


def remove_stale(out: Path, before: dict[Path, int]) -> None:
    """A report owns the tables and figures in its folder: one this build did not write (a section that no
    longer applies, e.g. eta_max tables after a re-run at a single LR) is removed, with a line, so no table
    from an earlier design sits beside the report that no longer describes it."""
    for path in owned_outputs(out):
        if path in before and path.stat().st_mtime_ns == before[path]:
            path.unlink()
            print(f"report: removed {path.name}: not produced by this report (stale from an earlier one)", flush=True)


def _answer_line(r: pd.Series, what: str, where: str) -> str:
    verdict = r["verdict"] + (f", p_holm {_p(r['p_holm'])}" if pd.notna(r["p_holm"]) else "")
    base = stability.baseline_setting(r)
    across = [k for k in base if k not in stability.VARY]  # keys a declared pair varies beyond warmup (norm)
    return (f"- {r.get('task', '')}: {what} of {_short(r, across)} / {_short(base, across)}{where}: "
            f"{_interval(r, 'ratio')} ({stability.INTERVAL_TEXT} {r['ci_coverage']:.0%}, {int(r['n_seeds'])} vs "
            f"{int(r['n_seeds_baseline'])} seeds): **{verdict}**")


def _short(values: Any, across: Sequence[str] = ()) -> str:
    """A warmup setting as swept: `linear@20`, `none@0`, `untuned_linear` (a length set by its rule), after
    the `across` keys' values where a pair differs in more than warmup (`norm=post linear@20`)."""
    shape, steps = values.get("warmup"), values.get("warmup_steps")
    steps = pd.to_numeric(steps, errors="coerce")
    warmup = f"{shape}@{int(steps)}" if pd.notna(steps) and shape not in (None, "") else str(shape)
    return " ".join([*(f"{k}={values.get(k)}" for k in across), warmup])


def answer_section(eta_comp: pd.DataFrame | None, loss_comp: pd.DataFrame | None,
                   measures: Sequence[str] = ("eta_max",)) -> list[str]:
    """The report's answer first: every comparison the preset declared before its runs, with its ratio,
    exact interval and verdict, under the default criterion (and on the final loss where declared)."""
    lines = []
    if loss_comp is not None and len(loss_comp):
        for _, r in loss_comp[loss_comp["declared"].astype(bool)].iterrows():
            lines.append(_answer_line(r, "final training loss", f" at lr {r['lr']:.3g}"))
    if "eta_max" in measures and eta_comp is not None and len(eta_comp):
        comp = eta_comp[eta_comp["declared"] & eta_comp["criterion"].eq(stability.DEFAULT_CRITERION)]
        for _, r in comp.iterrows():
            lines.append(_answer_line(r, f"eta_max ({stability.DEFAULT_CRITERION})", ""))
    if not lines:
        return []
    return (["## Answer: the comparisons declared before the runs", "",
             f"Ratio b / baseline with its exact interval; `resolved` = p_holm <= {stability.ALPHA} with >= "
             f"{stability.MIN_SEEDS} seeds a side (details, every criterion and every other pair below).", ""]
            + lines + [""])


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m warmup_lab.report", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", type=Path, help="sweep directories (searched recursively for runs)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default results/<experiment>)")
    p.add_argument("--experiment", default=None, help="name (default: the summaries' experiment or the dir name)")
    p.add_argument("--log-lr", action="store_true", help="log-scale y axis for the LR curves")
    p.add_argument("--criteria", nargs="+", default=list(stability.DEFAULT_CRITERIA),
                   help="stability criteria, side by side (plain, loss_frac_<f>, near_best_<k>, not_diverged)")
    args = p.parse_args(argv)
    for name in args.criteria:
        try:
            stability.criterion(name)
        except ValueError as err:
            raise ConfigError("--criteria", name, str(err).split(": ", 1)[-1]) from None
    try:
        out = build_report(args.dirs, args.out, args.experiment, log_lr=args.log_lr, criteria=args.criteria)
    except OSError as err:  # --out read-only, full, or a file: one line
        raise output_error(err, args.out or Path("results"), "--out") or err from None
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
