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


def across_keys(row: pd.Series) -> list[str]:
    """The keys besides warmup in which a row's setting differs from its baseline (e.g. norm: Post- vs Pre-LN);
    empty for a warmup-vs-warmup comparison."""
    base = stability.baseline_setting(row)
    return [k for k, v in base.items() if k not in stability.VARY and str(row.get(k)) != str(v)]


def _warmup_text(values: Any) -> str:
    steps = pd.to_numeric(values.get("warmup_steps"), errors="coerce")
    return f"{values.get('warmup', '?')}@{float(steps):g}" if pd.notna(steps) else str(values.get("warmup", "?"))


def comparison_label(row: pd.Series) -> str:
    """What a row compares: its warmup setting (`linear@20`, against no warmup) or, across another key,
    `norm=pre vs norm=post (none@0)` (same warmup) / `norm=pre linear@20 vs norm=post none@0`."""
    across, base = across_keys(row), stability.baseline_setting(row)
    mine, theirs = _warmup_text(row), _warmup_text(base)
    if not across:
        return mine if vs_none_row(row) else f"{mine} vs {theirs}"
    a = " ".join(f"{k}={row.get(k)}" for k in across)
    b = " ".join(f"{k}={base[k]}" for k in across)
    return f"{a} vs {b} ({mine})" if mine == theirs else f"{a} {mine} vs {b} {theirs}"


def vs_none_row(row: pd.Series) -> bool:
    base = stability.baseline_setting(row)
    return pd.to_numeric(base.get("warmup_steps"), errors="coerce") == 0 and not across_keys(row)


def vs_none(table: pd.DataFrame) -> pd.Series:
    """Rows of warmup against no warmup: the baseline is warmup_steps = 0 (compare's default) and differs from
    the row in nothing but warmup."""
    return table.apply(vs_none_row, axis=1).astype(bool) if len(table) else pd.Series(dtype=bool)


def cross_key(table: pd.DataFrame) -> pd.Series:
    """Rows of a declared comparison across a key besides warmup (e.g. {norm: pre} vs {norm: post})."""
    return table.apply(lambda r: bool(across_keys(r)), axis=1).astype(bool) if len(table) else pd.Series(dtype=bool)


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The rows the summary and the figure show (warmup vs no warmup, and every cross-key comparison), with
    `comparison` (comparison_label) and `warmup_only` (True: warmup vs no warmup)."""
    if table.empty:
        return table.assign(comparison=pd.Series(dtype=str), warmup_only=pd.Series(dtype=bool))
    only, cross = vs_none(table), cross_key(table)
    rows = table[only | cross]
    return rows.assign(comparison=rows.apply(comparison_label, axis=1).astype(str), warmup_only=only[only | cross])


def above_one(s: pd.DataFrame) -> pd.Series:
    """Rows whose ratio is > 1 as printed (3 significant digits: a ratio printed as 1.00 is not > 1), an exact
    value or a lower bound (">=")."""
    printed = pd.to_numeric(s["ratio"], errors="coerce").map(lambda x: float(f"{x:.3g}") if pd.notna(x) else np.nan)
    return (printed > 1) & s["ratio_censored"].isin(["", "above"])


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


def _ratio_text(s: pd.DataFrame, bar: float) -> str:
    above = s[above_one(s)]["threshold"].tolist()
    text = (f"ratio > 1 for f in {_ranges(above)} ({len(above)} of {len(THRESHOLDS)} thresholds)" if above
            else "ratio > 1 at no threshold")
    if pd.notna(bar):
        at = s.iloc[(s["threshold"] - bar).abs().to_numpy().argmin()]
        text += f"; at f = {at['threshold']:.2f} (nearest the bar): {_cell(at)}"
    return text


def summary_lines(table: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """One line per arm: where the ratio at the longest warmup (vs no warmup) is > 1, what it is at the bar,
    what resolves; the same for each comparison declared across another key (`norm=pre vs norm=post (none@0)`).
    "> 1" is read from the ratio as printed (3 significant digits)."""
    from warmup_lab.plots import _arms

    rows = shown(table)
    if rows.empty:
        return []
    lines = []
    for _, arm_label, g in _arms(rows, keys)[1]:
        bar, source = g["bar"].iloc[0], g["bar_source"].iloc[0]
        head = f"- **{arm_label}** (bar: " + (f"{source} = {bar:.2f} l0)" if pd.notna(bar) else "none recorded in these runs)")
        parts = []
        ordinary = g[g["warmup_only"]]
        longest = ordinary[ordinary["warmup_steps"] == ordinary["warmup_steps"].max()]
        for name, s in longest.groupby("comparison", sort=True):
            parts.append(f"longest warmup {name} vs no warmup: {_ratio_text(s.sort_values('threshold'), bar)}")
        for name, s in g[~g["warmup_only"]].groupby("comparison", sort=True):
            parts.append(f"{name}: {_ratio_text(s.sort_values('threshold'), bar)}")
        resolved = g[g["verdict"] == "resolved"]
        res_text = "no threshold resolves" if resolved.empty else "resolved: " + "; ".join(
            f"{name} at f in {_ranges(s['threshold'].tolist())}"
            for name, s in sorted(resolved.groupby("comparison", sort=False),
                                  key=lambda kv: (not kv[1]["warmup_only"].iloc[0], kv[0])))
        lines.append(f"{head}: {'; '.join(parts)}; {res_text}.")
    return lines


def figure(table: pd.DataFrame, keys: Sequence[str], out: Any, n_lrs: int) -> Any:
    """A panel per arm: the eta_max ratio setting / baseline (log y, shared) against the threshold f, with its
    exact interval; a colour per comparison (each warmup setting against no warmup, and each comparison declared
    across another key, e.g. `norm=pre vs norm=post (none@0)`), filled where the verdict is `resolved`; a dashed
    line at the arm's declared bar. An undetermined ratio (censored both ways) is an x in a strip under its panel,
    a row per comparison. Returns a plots.Drawn (skipped with its reason when there is nothing to draw)."""
    from warmup_lab import plots
    from warmup_lab.plots import plt

    if n_lrs < MIN_LRS:
        return plots.skipped(f"{n_lrs} target LR(s); the threshold sweep needs at least {MIN_LRS}")
    rows = shown(table)
    if rows.empty:
        return plots.skipped("no setting with warmup_steps = 0 (no warmup) beside warmup settings in one arm")
    _, arms = plots._arms(rows, keys)
    finite = pd.concat([rows["ratio"], rows["ci_low"], rows["ci_high"]]).astype(float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    lo, hi = (min(finite.min(), 1.0) / 1.6, max(finite.max(), 1.0) * 1.6) if len(finite) else (0.5, 2.0)
    ncols = min(len(arms), 3)
    nrows = math.ceil(len(arms) / ncols)
    width = max(5.0 * ncols, 9.0)  # the legend and the title fit beside a single panel
    order = rows[["comparison", "warmup_only", "warmup_steps", "warmup"]].drop_duplicates("comparison")
    order = order.assign(_cross=~order["warmup_only"].astype(bool)).sort_values(
        ["_cross", "warmup_steps", "warmup", "comparison"])
    labels = order["comparison"].tolist()
    n_strip = max(len(set(g["comparison"])) for _, _, g in arms)
    strip_h = 0.25 + 0.16 * n_strip  # inches
    fig = plt.figure(figsize=(width, (3.6 + strip_h) * nrows + 1.6), layout="constrained")
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3.6, strip_h] * nrows, hspace=0.0)
    one_shape = order["warmup_only"].all() and order["warmup"].nunique() == 1
    cmap = plt.get_cmap("viridis") if one_shape else plt.get_cmap("tab10")
    colors = {k: cmap(0.1 + 0.75 * i / max(len(labels) - 1, 1)) if one_shape else cmap(i % 10)
              for i, k in enumerate(labels)}
    drawn, kinds, any_bar, first = [], set(), False, None
    for a, (_, arm_label, g) in enumerate(arms):
        r, c = divmod(a, ncols)
        ax = fig.add_subplot(grid[2 * r, c], sharey=first)
        strip = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
        first = first or ax
        present = [k for k in labels if (g["comparison"] == k).any()]
        for j, key in enumerate(present):
            s = g[g["comparison"] == key].sort_values("threshold")
            dx = (j - (len(present) - 1) / 2) * 0.009
            x = s["threshold"].to_numpy(float) + dx
            y = s["ratio"].to_numpy(float)
            color = colors[key]
            ax.plot(x, y, "-", color=color, lw=0.9, alpha=0.7, zorder=2)
            for xi, (_, row) in zip(x, s.iterrows()):
                cen, ok = row["ratio_censored"], row["verdict"] == "resolved"
                low = row["ci_low"] if pd.notna(row["ci_low"]) else lo
                high = row["ci_high"] if pd.notna(row["ci_high"]) else hi
                has_interval = pd.notna(row["ci_low"]) or pd.notna(row["ci_high"])  # both undetermined: none
                if has_interval:
                    ax.plot([xi, xi], [low, high], "-", color=color, lw=1.1, alpha=0.55, zorder=1)
                if pd.isna(row["ratio"]):
                    kind, yi = "undetermined", float(len(present) - 1 - j)  # the strip's row of this comparison
                    strip.plot(xi, yi, "x", color=color, ms=5, mew=1.3, zorder=3)
                else:
                    kind, yi = {"above": "lower bound", "below": "upper bound"}.get(cen, "ratio"), float(row["ratio"])
                    marker = {"lower bound": "^", "upper bound": "v"}.get(kind, "o")
                    ax.plot(xi, yi, marker, color=color, mfc=color if ok else "white", mew=1.3, ms=5.5, zorder=3)
                kinds.add(kind)
                drawn.append({"arm": arm_label, "setting": _warmup_text(row), "comparison": key,
                              "warmup_only": bool(row["warmup_only"]), "threshold": row["threshold"],
                              "ratio": row["ratio"], "kind": kind, "strip": kind == "undetermined", "y": yi,
                              "filled": ok, "ci_low": low, "ci_high": high, "has_interval": has_interval,
                              "ci_level": row["ci_level"], "ci_coverage": row["ci_coverage"]})
        bar, source = g["bar"].iloc[0], g["bar_source"].iloc[0]
        if pd.notna(bar):
            any_bar = True
            for target in (ax, strip):
                target.axvline(bar, ls="--", color="0.25", lw=1.2, zorder=0)
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
        ax.tick_params(labelsize=8, labelbottom=False)
        strip.tick_params(labelsize=8)
        strip.set_ylim(-0.7, len(present) - 0.3)
        strip.set_yticks([])
        strip.set_facecolor("0.95")
        strip.set_ylabel("undeter-\nmined", fontsize=7, rotation=0, ha="right", va="center")
        strip.set_xlabel("threshold f: stable = final train loss <= f x l0", fontsize=8)
        if c == 0 or g["warmup_only"].all() != rows["warmup_only"].all():
            ax.set_ylabel("eta_max ratio, " + ("warmup / no warmup" if g["warmup_only"].all() else
                                                "setting / baseline"), fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.yaxis.set_major_locator(plots.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plots.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(plots.ticker.NullFormatter())
    values = pd.DataFrame(drawn)
    L = plt.Line2D
    handles = [L([], [], color=colors[k], marker="o", lw=1, label=f"{k} vs no warmup" if only else k)
               for k, only in zip(labels, order["warmup_only"])]
    handles += [L([], [], marker="o", ls="", color="0.3", label=f"resolved (p_holm <= {stability.ALPHA})"),
                L([], [], marker="o", ls="", color="0.3", mfc="white", label="not resolved (other verdicts)")]
    handles += [h for kind, h in (
        ("lower bound", L([], [], marker="^", ls="", color="0.3", mfc="white", label="ratio >= (censored)")),
        ("upper bound", L([], [], marker="v", ls="", color="0.3", mfc="white", label="ratio < (censored)")),
        ("undetermined", L([], [], marker="x", ls="", color="0.3",
                           label="ratio undetermined (censored eta_max), in the strip below a panel")))
        if kind in kinds]
    with_interval = values[values["has_interval"]] if len(values) else values
    if len(with_interval):
        handles.append(L([], [], color="0.3", lw=1.1, alpha=0.55,
                         label=plots.coverage_text(with_interval, f"{stability.INTERVAL_TEXT} (Hodges-Lehmann)")
                         + " (to the edge: undetermined)"))
    handles.append(L([], [], color="black", lw=0.8, label="ratio 1"))
    if any_bar:
        handles.append(L([], [], color="0.25", ls="--", lw=1.2, label="the arm's declared bar"))
    ncol = min(3 if width >= 10 else 2, len(handles))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=7.5, frameon=False)
    cross = not rows["warmup_only"].all()
    fig.suptitle("Threshold sweep: eta_max ratio (Hodges-Lehmann) of each warmup to no warmup"
                 + (",\nand of each comparison declared across another key" if cross else "") + ", under loss_frac_f",
                 fontsize=10)
    path = out / FIGURE
    fig.savefig(path, dpi=plots.DPI, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return plots.Drawn(path, values=values)


CAPTION = ("A panel per arm. x: the threshold f of the criterion loss_frac_f (stable = plain and final train loss "
           "<= f x l0). y: eta_max(warmup) / eta_max(no warmup) over seeds (Hodges-Lehmann), or, for a comparison "
           "declared across another key (`norm=pre vs norm=post (none@0)`), eta_max(setting) / eta_max(baseline); "
           f"with its {stability.INTERVAL_TEXT} interval (nominal level and exact coverage in the legend); filled: "
           "verdict `resolved`; x in the strip under a panel: ratio undetermined (both medians censored). "
           f"{HOLM_TEXT}. "
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
    if len(table) and cross_key(table).any():
        md[-2] += (" Comparisons the preset declared across another key (e.g. Pre-LN vs Post-LN at one warmup) are "
                   "shown beside them, named by what differs: `norm=pre vs norm=post (none@0)`.")
    md += summary_lines(table, keys) + [""]
    drawn = figure(table, keys, out, n_lrs)
    if drawn.path is None:
        print(f"report: {FIGURE} skipped: {drawn.reason}", file=sys.stderr, flush=True)
    md += [plots.note_or_link(drawn, CAPTION), ""]
    return md, table
