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

from warmup_lab import archive, runs, stability
from warmup_lab.errors import ConfigError, exit_on_user_error
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
def _fmt(x: Any, censored: str = "") -> str:
    """An LR or ratio, `<` / `>=` when censored (an upper / lower bound), `?` when undetermined."""
    x = float(x)
    if censored == "undetermined" or math.isnan(x):
        return "?" if censored == "undetermined" else "-"
    return {"below": "< ", "above": ">= "}.get(censored, "") + f"{x:.3g}"


def _estimate(row: pd.Series) -> str:
    """`0.12 [0.1, 0.14] n=5`, censored values marked and the censored seeds listed."""
    text = (f"{_fmt(row['estimate'], row['estimate_censored'])} [{_fmt(row['ci_low'], row['ci_low_censored'])}, "
            f"{_fmt(row['ci_high'], row['ci_high_censored'])}] n={row['n_seeds']}")
    return text + (f" (censored {row['censored_seeds']})" if row["censored_seeds"] else "")


def _per_seed(row: pd.Series) -> str:
    if row["censored"] == "below":
        return _fmt(row["hi"], "below")
    return _fmt(row["eta_max"], row["censored"]) + (" *" if row["non_monotone"] else "")


def _wide(frame: pd.DataFrame, index: list[str], cell: Any, criteria: Sequence[str]) -> pd.DataFrame:
    """One row per `index`, a column per criterion (in the order given)."""
    shown = frame.assign(_cell=frame.apply(cell, axis=1))
    wide = shown.pivot_table(index=index, columns="criterion", values="_cell", aggfunc="first")
    return wide.reindex(columns=[c for c in criteria if c in wide.columns]).rename_axis(columns=None).reset_index()


def eta_section(res: pd.DataFrame, out: Path, criteria: Sequence[str]) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """eta_max per seed and over seeds under every criterion, P(stable | LR), ratios to no warmup."""
    md = ["## Maximum stable LR (eta_max)", "", f"_Criteria: {stability.criteria_text(criteria)}_", "",
          "Per seed, eta_max = the largest stable LR below the first unstable LR above the smallest stable "
          "one, probes sorted by LR (docs/definitions.md#eta-max), the same rule for a grid and for the "
          "search's probes. Over seeds: "
          f"the median (a censored seed enters at its bound and is flagged), {stability.CI_LEVEL:.0%} percentile bootstrap CI "
          f"over seeds ({stability.N_BOOT} resamples, fixed RNG seed); `<`/`>=` = censored by the LR range.", ""]
    probes = stability.probes_from_runs(res)
    keys = stability.setting_keys(probes)
    if probes["lr"].nunique() < 2:
        return md + ["_No eta_max: a single target LR._", ""], {}
    tables = stability.tables(probes, keys, criteria)
    stability.write_tables(out, tables)
    shown = [k for k in keys if k in ("warmup", "warmup_steps") or k in varying(probes, [k])]
    summary, per_seed = tables[stability.SUMMARY_FILE], tables[stability.ETA_FILE]
    md += ["### Over seeds: median [CI] n, a column per criterion", "",
           _md(_wide(summary, shown, _estimate, criteria)), "",
           "### Per seed (`*` = non-monotone: a stable LR above `hi`, or an unstable LR below every stable one)", "",
           _md(_wide(per_seed, [*shown, "seed"], _per_seed, criteria)), ""]
    comp = tables[stability.COMPARE_FILE]
    md += ["### Each warmup vs no warmup: ratio of eta_max medians", "",
           f"Bootstrap over each side's seeds; `resolved` = the {stability.CI_LEVEL:.0%} CI excludes 1 "
           "(otherwise the difference is not resolved by these seeds).", ""]
    if comp.empty:
        md += ["_No comparison: no setting with warmup_steps = 0 beside others._", ""]
    else:
        comp_shown = comp.assign(ratio=comp.apply(
            lambda r: f"{_fmt(r['ratio'], r['ratio_censored'])} [{_fmt(r['ci_low'], r['ci_low_censored'])}, "
                      f"{_fmt(r['ci_high'], r['ci_high_censored'])}]", axis=1))
        cols = [*shown, "criterion", "baseline", "n_seeds", "n_seeds_baseline", "ratio", "resolved"]
        md += [_md(comp_shown[[c for c in cols if c in comp_shown]]), ""]
    ps = tables[stability.P_STABLE_FILE]
    md += ["### P(stable | LR): n_stable/n over every probe of every seed", ""]
    for name in criteria:
        g = ps[ps["criterion"] == name]
        cell = g.assign(_cell=g["n_stable"].astype(str) + "/" + g["n"].astype(str))
        wide = cell.pivot_table(index=shown, columns="lr", values="_cell", aggfunc="first").rename_axis(columns=None)
        wide.columns = [f"lr={c:.3g}" for c in wide.columns]
        md += [f"{stability.criterion(name).text}", "", _md(wide.fillna("").reset_index()), ""]
    return md, tables


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
        sens.to_csv(out / stability.SENSITIVITY_FILE, index=False)
        md += [_md(sens), ""]
    return md + [line for s in skipped for line in (s, "")]


# -- the report ------------------------------------------------------------------------------------
def _md(df: pd.DataFrame, index: bool = False) -> str:
    return df.to_markdown(index=index, floatfmt=".4g") if not df.empty else "_(no rows)_"


def experiment_name(df: pd.DataFrame, dirs: Sequence[Path]) -> str:
    names = df["experiment"].dropna().astype(str).unique() if "experiment" in df else []
    return str(names[0]) if len(names) else Path(dirs[0]).resolve().name


def _heatmap_groups(metric_tables: list[tuple[str, str, pd.DataFrame, pd.DataFrame]]
                    ) -> list[tuple[str, str, pd.DataFrame]]:
    """One heatmap per task family when its warmup shapes have distinct lengths (none@0 beside linear@10,
    30, 60: one map, T_w rows), else one per shape."""
    groups: dict[tuple[str, str], list[tuple[str, pd.DataFrame]]] = {}
    for title, metric, cells, _ in metric_tables:
        groups.setdefault((re.sub(r", warmup=[^,]+", "", title), metric), []).append((title, cells))
    out = []
    for (base, metric), parts in groups.items():
        lengths = [set(c["warmup_steps"]) for _, c in parts]
        if len(parts) > 1 and sum(map(len, lengths)) == len(set().union(*lengths)):
            out.append((base, metric, pd.concat([c for _, c in parts], ignore_index=True)))
        else:
            out += [(title, metric, cells) for title, cells in parts]
    return out


def figures_section(res: pd.DataFrame, metric_tables: list[tuple[str, str, pd.DataFrame, pd.DataFrame]],
                    eta_tables: dict[str, pd.DataFrame], out: Path, log_lr: bool = False,
                    criteria: Sequence[str] = stability.DEFAULT_CRITERIA) -> list[str]:
    """Every figure of the report, in one place (plots.py draws; this picks what to draw, with captions).

    Per-step curves come from each run's metrics.csv when the run directory is here, else from
    `out/curves.csv.gz`, which is rewritten from them: committed results redraw without re-training."""
    from warmup_lab import plots

    curves = archive.Curves.read(out).load(res["run_path"] if "run_path" in res else [])
    archive.write_curves(res, out, curves)
    md = ["## Figures", ""]
    per_seed = eta_tables.get(stability.ETA_FILE, pd.DataFrame())
    summary = eta_tables.get(stability.SUMMARY_FILE, pd.DataFrame())
    ps = eta_tables.get(stability.P_STABLE_FILE, pd.DataFrame())
    keys = stability.setting_keys(per_seed) if not per_seed.empty else []
    md += ["### eta_max vs warmup length", "", plots.note_or_link(
        plots.eta_max_vs_warmup(per_seed, summary, keys, criteria, out),
        "A panel per task family and criterion. Grey dots: eta_max of one seed; down arrow: a seed with no "
        "stable LR in range, drawn at its first unstable LR; up arrow: every LR stable, drawn at the largest. "
        f"Black: median over seeds with its {stability.CI_LEVEL:.0%} bootstrap CI (hollow: the median is a "
        "censored bound). Criteria as in the eta_max tables above."), ""]
    md += ["### P(stable | LR)", "", plots.note_or_link(
        plots.p_stable_vs_lr(ps, keys, criteria, out),
        "Share of runs (every seed) stable at each target LR, a line per warmup setting, n runs per point."), ""]
    for title, metric, cells in _heatmap_groups(metric_tables):
        md += [f"### {title}: {metric}", "", plots.note_or_link(
            plots.heatmap(cells, title, metric, out),
            f"Mean {metric} over seeds; n = seeds per cell; hatched: k seeds diverged."), ""]
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
    if df.empty:  # committed results (runs.parquet/csv + curves), no run directories: redraw from them
        df = archive.read_runs(dirs)
    if df.empty:
        raise NoRunsError(dirs)
    experiment = experiment or experiment_name(df, dirs)
    out = Path(out) if out is not None else Path("results") / experiment
    out.mkdir(parents=True, exist_ok=True)
    archive.write_runs(df, out)
    res, crit = results(df), detect_text(df)
    md = [f"# Report: {experiment}", "", f"Sweep dirs: {', '.join(f'`{d}`' for d in dirs)}", ""]

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
        pd.concat([t[2] for t in metric_tables], ignore_index=True).to_csv(out / "table_final_metric.csv", index=False)
    for title, metric, _, pivot in metric_tables:
        md += [f"### {title} ({metric})", "", _md(pivot, index=True), ""]

    eta_md, eta_tables = eta_section(res, out, criteria)
    md += eta_md
    md += ["## Divergence and failure rates", "", crit, ""]
    r = rates(res)
    r.to_csv(out / "table_rates.csv", index=False)
    md += [_md(r), ""]
    md += ["## Loss spikes and catapults", "", crit, ""]
    s = spikes(res)
    s.to_csv(out / "table_spikes.csv", index=False)
    md += [_md(s), ""]
    md += sensitivity_section(res, out)
    md += figures_section(res, metric_tables, eta_tables, out, log_lr, criteria)
    (out / "report.md").write_text("\n".join(md).rstrip() + "\n")
    return out


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
    out = build_report(args.dirs, args.out, args.experiment, log_lr=args.log_lr, criteria=args.criteria)
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
