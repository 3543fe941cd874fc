"""The threshold sweep: each warmup setting's eta_max ratio to no warmup under `loss_frac_<f>`, f = 0.10 .. 0.95.

Why: a loss bar f x l0 turns any smooth final-loss-vs-LR curve into "stable" below the LR where the curve
crosses f x l0 and "unstable" above it. A verdict that holds only in a narrow band of f is that crossing
moving with warmup, not an edge of stability; one that holds over a wide band, and at the arm's declared bar,
is (docs/definitions.md#threshold-sweep). Every number comes from warmup_lab.stability (judge,
eta_max_per_seed, compare): this module only runs them at each f, writes the table and draws it.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from warmup_lab import stability

THRESHOLDS = tuple(round(0.10 + 0.05 * i, 2) for i in range(18))  # 0.10, 0.15, ..., 0.95 of l0
FILE, FIGURE = "threshold_sweep.csv", "threshold_sweep.png"
COLUMNS = ["threshold", "criterion", "baseline", "n_seeds", "n_seeds_baseline", "ratio", "ratio_censored", "ci_low",
           "ci_high", "ci_low_censored", "ci_high_censored", "ci_level", "ci_coverage", "test", "p_value", "p_holm",
           "declared", "verdict", "bar", "bar_source"]
MIN_LRS = 3  # below this an eta_max ratio is mostly censoring: no figure
HOLM_TEXT = ("p_holm: Holm's adjustment at each threshold over the preset's declared comparisons of that arm "
             "(the family of eta_max_compare.csv, one criterion at a time); not corrected across the thresholds")


def criterion_name(f: float) -> str:
    return f"loss_frac_{f:g}"


def bar_source(runs_of_task: pd.DataFrame) -> str:
    """What a task's baseline_loss is: an LM's unigram entropy (its data records it), else the loss of the best
    constant predictor (a classifier's class-prior entropy; tasks/base.py Task.baseline_loss)."""
    col = "task_info.unigram_entropy"
    lm = (col in runs_of_task and runs_of_task[col].notna().any()) or \
        ("task_info.kind" in runs_of_task and runs_of_task["task_info.kind"].astype(str).eq("lm").any())
    return "unigram entropy" if lm else "best constant predictor"


def bars(probes: pd.DataFrame, keys: Sequence[str], runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm (the setting keys but warmup and its length): the declared bar as a fraction of l0, = the task's
    baseline_loss / the median l0 over the arm's runs (NaN with source "none recorded" when the runs carry no
    task_info.baseline_loss)."""
    fixed = [k for k in keys if k not in stability.VARY]
    rows = []
    for values, g in (probes.groupby(fixed, dropna=False, sort=True) if fixed else [((), probes)]):
        values = values if isinstance(values, tuple) else (values,)
        base = pd.to_numeric(g.get("baseline_loss"), errors="coerce") if "baseline_loss" in g else pd.Series([np.nan])
        l0 = float(pd.to_numeric(g["init_loss"], errors="coerce").median())
        frac = float(base.median()) / l0 if base.notna().any() and l0 > 0 else math.nan
        task = dict(zip(fixed, values)).get("task")
        of_task = runs[runs["task"].astype(str) == str(task)] if task is not None and "task" in runs else runs
        rows.append({**dict(zip(fixed, values)), "bar": frac,
                     "bar_source": bar_source(of_task) if math.isfinite(frac) else "none recorded"})
    return pd.DataFrame(rows, columns=[*fixed, "bar", "bar_source"])


def sweep(probes: pd.DataFrame, keys: Sequence[str], runs: pd.DataFrame, declared: stability.Declared | None = None,
          one_arm: Any = (), source_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (arm, compared setting, threshold): stability.compare's ratio, interval, p, Holm p and verdict
    under loss_frac_<f>, with the arm's declared bar beside it."""
    keys = list(keys)
    names = [criterion_name(f) for f in THRESHOLDS]
    per_seed = stability.eta_max_per_seed(stability.judge(probes, names, keys), keys)
    comp = stability.compare(per_seed, keys, declared=declared, one_arm=one_arm, source_runs=source_runs)
    if comp.empty:
        return pd.DataFrame(columns=[*keys, *COLUMNS])
    comp["threshold"] = comp["criterion"].map(lambda c: stability.criterion(c).value)
    fixed = [k for k in keys if k not in stability.VARY]
    comp = comp.merge(bars(probes, keys, runs), on=fixed, how="left") if fixed else \
        comp.assign(**bars(probes, keys, runs).iloc[0].to_dict())
    order = [*fixed, "baseline", *[k for k in keys if k in stability.VARY], "threshold"]
    return comp.sort_values(order, kind="stable")[[*keys, *COLUMNS]].reset_index(drop=True)


def vs_none(table: pd.DataFrame) -> pd.Series:
    """Rows whose baseline is no warmup (compare's default baseline, warmup_steps = 0)."""
    return table["baseline"].astype(str).str.contains(r"(?:^|, )warmup_steps=0(?:,|$)")


def _ranges(values: Sequence[float]) -> str:
    """0.4, 0.45, 0.5, 0.8 -> "0.40-0.50, 0.80" (consecutive on the THRESHOLDS grid)."""
    idx = sorted(THRESHOLDS.index(v) for v in values)
    runs_, start = [], None
    for i, j in enumerate(idx):
        start = j if start is None else start
        if i + 1 == len(idx) or idx[i + 1] != j + 1:
            runs_.append(f"{THRESHOLDS[start]:.2f}" + ("" if start == j else f"-{THRESHOLDS[j]:.2f}"))
            start = None
    return ", ".join(runs_)


def _setting(row: pd.Series) -> str:
    return f"{row.get('warmup', '?')}@{float(row['warmup_steps']):g}"


def _cell(row: pd.Series) -> str:
    mark = {"below": "< ", "above": ">= "}
    fmt = lambda x, c: "?" if c == "undetermined" or pd.isna(x) else mark.get(c, "") + f"{float(x):.3g}"
    if row["ratio_censored"] == "undetermined" or pd.isna(row["ratio"]):
        ratio = "undetermined (censored medians)"
    else:
        ratio = (f"{fmt(row['ratio'], row['ratio_censored'])} [{fmt(row['ci_low'], row['ci_low_censored'])}, "
                 f"{fmt(row['ci_high'], row['ci_high_censored'])}]")
    return (f"{ratio}, p_holm {'-' if pd.isna(row['p_holm']) else f'{row.p_holm:.3g}'}"
            f", {row['verdict']}")


def summary_lines(table: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """One line per arm: where the ratio at the longest warmup is > 1, what it is at the bar, what resolves."""
    from warmup_lab.plots import _arms

    rows = table[vs_none(table)]
    if rows.empty:
        return []
    lines = []
    for _, arm_label, g in _arms(rows, keys)[1]:
        longest = g[g["warmup_steps"] == g["warmup_steps"].max()]
        bar, source = g["bar"].iloc[0], g["bar_source"].iloc[0]
        head = f"- **{arm_label}** (bar: " + (f"{source} = {bar:.2f} l0)" if pd.notna(bar) else "none recorded in these runs)")
        parts = []
        for (shape, tw), s in longest.groupby(["warmup", "warmup_steps"], sort=True):
            name = f"{shape}@{float(tw):g}"
            above = s[(s["ratio"] > 1) & s["ratio_censored"].isin(["", "above"])]["threshold"].tolist()
            text = (f"ratio > 1 for f in {_ranges(above)} ({len(above)} of {len(THRESHOLDS)} thresholds)" if above
                    else "ratio > 1 at no threshold")
            if pd.notna(bar):
                at = s.iloc[(s["threshold"] - bar).abs().to_numpy().argmin()]
                text += f"; at f = {at['threshold']:.2f} (nearest the bar): {_cell(at)}"
            parts.append(f"longest warmup {name}: {text}")
        resolved = g[g["verdict"] == "resolved"]
        res_text = "no threshold resolves" if resolved.empty else "resolved: " + "; ".join(
            f"{_setting(s.iloc[0])} at f in {_ranges(s['threshold'].tolist())}"
            for _, s in resolved.groupby(["warmup", "warmup_steps"], sort=True))
        lines.append(f"{head}: {'; '.join(parts)}; {res_text}.")
    return lines


def figure(table: pd.DataFrame, keys: Sequence[str], out: Any, n_lrs: int) -> Any:
    """A panel per arm: the eta_max ratio warmup / none (log y, shared) against the threshold f, with its exact
    interval; a colour per warmup setting, filled where the verdict is `resolved`; a dashed line at the arm's
    declared bar. Returns a plots.Drawn (skipped with its reason when there is nothing to draw)."""
    from warmup_lab import plots
    from warmup_lab.plots import plt

    if n_lrs < MIN_LRS:
        return plots.skipped(f"{n_lrs} target LR(s); the threshold sweep needs at least {MIN_LRS}")
    rows = table[vs_none(table)] if not table.empty else table
    if rows.empty:
        return plots.skipped("no setting with warmup_steps = 0 (no warmup) beside warmup settings in one arm")
    _, arms = plots._arms(rows, keys)
    finite = pd.concat([rows["ratio"], rows["ci_low"], rows["ci_high"]]).astype(float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    lo, hi = (min(finite.min(), 1.0) / 1.6, max(finite.max(), 1.0) * 1.6) if len(finite) else (0.5, 2.0)
    ncols = min(len(arms), 3)
    nrows = math.ceil(len(arms) / ncols)
    width = max(5.0 * ncols, 9.0)  # the legend and the title fit beside a single panel
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.9 * nrows + 1.0), squeeze=False, sharey=True)
    settings = rows[["warmup", "warmup_steps"]].drop_duplicates().sort_values(["warmup_steps", "warmup"])
    one_shape = settings["warmup"].nunique() == 1
    cmap = plt.get_cmap("viridis") if one_shape else plt.get_cmap("tab10")
    colors = {(s, t): cmap(0.1 + 0.75 * i / max(len(settings) - 1, 1)) if one_shape else cmap(i % 10)
              for i, (s, t) in enumerate(settings.itertuples(index=False))}
    drawn, kinds = [], set()
    for a, (_, arm_label, g) in enumerate(arms):
        ax = axes[a // ncols, a % ncols]
        present = [k for k in colors if ((g["warmup"] == k[0]) & (g["warmup_steps"] == k[1])).any()]
        for j, key in enumerate(present):
            s = g[(g["warmup"] == key[0]) & (g["warmup_steps"] == key[1])].sort_values("threshold")
            dx = (j - (len(present) - 1) / 2) * 0.009
            x = s["threshold"].to_numpy(float) + dx
            y = s["ratio"].to_numpy(float)
            color = colors[key]
            ax.plot(x, y, "-", color=color, lw=0.9, alpha=0.7, zorder=2)
            for xi, (_, r) in zip(x, s.iterrows()):
                cen, ok = r["ratio_censored"], r["verdict"] == "resolved"
                low = r["ci_low"] if pd.notna(r["ci_low"]) else lo
                high = r["ci_high"] if pd.notna(r["ci_high"]) else hi
                if pd.notna(r["ci_low"]) or pd.notna(r["ci_high"]):  # both undetermined: no interval to draw
                    ax.plot([xi, xi], [low, high], "-", color=color, lw=1.1, alpha=0.55, zorder=1)
                if pd.isna(r["ratio"]):
                    kind, yi = "undetermined", lo * 1.15
                    ax.plot(xi, yi, "x", color=color, ms=5, zorder=3)
                else:
                    kind, yi = {"above": "lower bound", "below": "upper bound"}.get(cen, "ratio"), float(r["ratio"])
                    marker = {"lower bound": "^", "upper bound": "v"}.get(kind, "o")
                    ax.plot(xi, yi, marker, color=color, mfc=color if ok else "white", mew=1.3, ms=5.5, zorder=3)
                kinds.add(kind)
                drawn.append({"arm": arm_label, "setting": f"{key[0]}@{float(key[1]):g}", "threshold": r["threshold"],
                              "ratio": r["ratio"], "kind": kind, "filled": ok, "ci_low": low, "ci_high": high})
        bar, source = g["bar"].iloc[0], g["bar_source"].iloc[0]
        if pd.notna(bar):
            ax.axvline(bar, ls="--", color="0.25", lw=1.2, zorder=0)
            ax.text(bar + (0.01 if bar < 0.75 else -0.01), 0.98, f"bar: {source}\n= {bar:.2f} l0",
                    transform=ax.get_xaxis_transform(), fontsize=7, va="top", ha="left" if bar < 0.75 else "right",
                    color="0.1", bbox=dict(facecolor="white", alpha=0.8, lw=0, pad=1), zorder=5)
            title = arm_label
        else:
            title = f"{arm_label}\nbar: none recorded (no task_info.baseline_loss)"
        ax.axhline(1.0, color="black", lw=0.8, zorder=0)
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ax.set_xlim(0.05, 1.0)
        ax.set_xticks([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
        ax.tick_params(labelsize=8)
        ax.set_xlabel("threshold f: stable = final train loss <= f x l0", fontsize=8)
        if a % ncols == 0:
            ax.set_ylabel("eta_max ratio, warmup / no warmup", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.yaxis.set_major_locator(plots.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plots.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(plots.ticker.NullFormatter())
    for k in range(len(arms), nrows * ncols):
        axes[k // ncols, k % ncols].axis("off")
    L = plt.Line2D
    handles = [L([], [], color=c, marker="o", lw=1, label=f"{s}@{float(t):g}") for (s, t), c in colors.items()]
    handles += [L([], [], marker="o", ls="", color="0.3", label=f"resolved (p_holm <= {stability.ALPHA})"),
                L([], [], marker="o", ls="", color="0.3", mfc="white", label="not resolved (other verdicts)")]
    handles += [h for kind, h in (
        ("lower bound", L([], [], marker="^", ls="", color="0.3", mfc="white", label="ratio >= (censored)")),
        ("upper bound", L([], [], marker="v", ls="", color="0.3", mfc="white", label="ratio < (censored)")),
        ("undetermined", L([], [], marker="x", ls="", color="0.3", label="ratio undetermined (censored eta_max)")))
        if kind in kinds]
    handles += [L([], [], color="0.3", lw=1.1, alpha=0.55,
                  label=f"{stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval (to the edge: undetermined)"),
                L([], [], color="black", lw=0.8, label="ratio 1"),
                L([], [], color="0.25", ls="--", lw=1.2, label="the arm's declared bar")]
    ncol = min(4 if width >= 10 else 3, len(handles))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7.5, frameon=False)
    fig.suptitle("Threshold sweep: eta_max ratio (Hodges-Lehmann) of each warmup to no warmup, under loss_frac_f",
                 fontsize=10)
    legend_rows = math.ceil(len(handles) / ncol)
    fig.tight_layout(rect=(0, min(0.4, (0.1 + 0.16 * legend_rows) / fig.get_figheight()), 1, 1))
    path = out / FIGURE
    fig.savefig(path, dpi=plots.DPI)
    plt.close(fig)
    return plots.Drawn(path, values=pd.DataFrame(drawn))


CAPTION = ("A panel per arm. x: the threshold f of the criterion loss_frac_f (stable = plain and final train loss "
           "<= f x l0). y: eta_max(warmup) / eta_max(no warmup) over seeds (Hodges-Lehmann), with its "
           f"{stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval; filled: verdict `resolved`. {HOLM_TEXT}. "
           "Dashed: the arm's declared bar (task baseline_loss / median l0). A ratio > 1 only in a narrow band of f "
           "is where a smooth loss-vs-LR curve crosses the bar, not a stability edge.")


def section(probes: pd.DataFrame, keys: Sequence[str], runs: pd.DataFrame, found: dict[str, Any] | None,
            out: Any) -> tuple[list[str], pd.DataFrame]:
    """The report's "Threshold sweep" section and its table (the report writes it to FILE), the figure drawn
    into `out`; a line on stderr says why when the figure is skipped."""
    import sys

    from warmup_lab import plots

    md = ["## Threshold sweep", "",
          f"Every warmup setting against no warmup under loss_frac_f for f = {THRESHOLDS[0]:.2f}, "
          f"{THRESHOLDS[1]:.2f}, ..., {THRESHOLDS[-1]:.2f} of l0 (`{FILE}`; statistics as in the comparisons above; "
          f"{HOLM_TEXT}; docs/definitions.md#threshold-sweep).", ""]
    n_lrs = int(probes["lr"].nunique()) if len(probes) else 0
    found = found or {}
    table = (sweep(probes, keys, runs, found.get("declared"), found.get("one_arm", ()), found.get("source_runs"))
             if n_lrs >= 2 else pd.DataFrame(columns=[*keys, *COLUMNS]))
    md += summary_lines(table, keys) + [""]
    drawn = figure(table, keys, out, n_lrs)
    if drawn.path is None:
        print(f"report: {FIGURE} skipped: {drawn.reason}", file=sys.stderr, flush=True)
    md += [plots.note_or_link(drawn, CAPTION), ""]
    return md, table
