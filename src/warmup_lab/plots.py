"""The report's figures: eta_max vs warmup length, P(stable | LR), loss and LR curves, metric heatmaps.

Every figure shows the spread, not one seed: per-seed points or thin per-seed curves beside the aggregate,
censored eta_max values as arrows, n in every heatmap cell. Headless (Agg), 150 dpi. Each function returns
a `Drawn`: the PNG's path (or the reason there is none, which the report prints instead of failing) and the
values it drew, so a test can check a figure against the tables it claims to show. eta_max values come
from `warmup_lab.stability` tables (one rule); per-step curves from `warmup_lab.archive.Curves`.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from warmup_lab import runs  # noqa: E402
from warmup_lab.archive import Curves  # noqa: E402
from warmup_lab.figstyle import log_axis  # noqa: E402
from warmup_lab.stability import CI_LEVEL, INTERVAL_TEXT  # noqa: E402

DPI = 150
MIN_LRS = 3  # fewer target LRs make no P(stable) curve and leave every eta_max a censored arrow
MAX_LRS = 3  # loss curves: columns of target LRs per figure
SHAPE_KEYS = ("warmup", "warmup_steps")
SHAPE_COLORS = ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:olive", "tab:cyan")  # not the arrows' red/blue


@dataclass
class Drawn:
    """A figure: its PNG (None when skipped, with `reason`) and the values it drew, one row per mark."""

    path: Path | None
    reason: str = ""
    values: pd.DataFrame = field(default_factory=pd.DataFrame)


def skipped(reason: str, stale: Path | None = None) -> Drawn:
    """A figure not drawn, and why; `stale`: its file from an earlier report, removed so that no outdated
    figure stays beside the report that no longer links it."""
    if stale is not None:
        stale.unlink(missing_ok=True)
    return Drawn(None, reason)


def note_or_link(result: Drawn, caption: str = "") -> str:
    """A Markdown image link with its caption below, or the reason the figure was skipped."""
    if result.path is None:
        return f"_Figure skipped: {result.reason}._"
    return f"![{result.path.stem}]({result.path.name})" + (f"\n\n_{caption}_" if caption else "")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", re.sub(r"\b\w+=", "", text)).strip("_") or "all"


def _grid(rows: int, cols: int, width: float = 4.2, height: float = 3.2, layout: str | None = None
          ) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout=layout)
    return fig, axes


def coverage_text(rows: pd.DataFrame, interval: str = INTERVAL_TEXT) -> str:
    """How an interval drawn from `rows` is named in a legend, from the rows themselves: the `interval` column
    (else `interval`), the nominal `ci_level` and the exact `ci_coverage` (its range where it varies with n),
    e.g. "exact order-statistic interval, nominal 90%, exact coverage 93-98%"."""
    names = sorted(set(rows["interval"].dropna().astype(str))) if "interval" in rows else []
    text = f"{' / '.join(names) if names else interval} interval"
    levels = pd.to_numeric(rows.get("ci_level", pd.Series(dtype=float)), errors="coerce").dropna()
    cover = pd.to_numeric(rows.get("ci_coverage", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(levels):
        lv = sorted({f"{v:.0%}" for v in levels})
        text += f", nominal {'/'.join(lv)}"
    if len(cover):
        lo, hi = f"{cover.min() * 100:.0f}", f"{cover.max() * 100:.0f}"
        text += f", exact coverage {lo}%" if lo == hi else f", exact coverage {lo}-{hi}%"
    return text


def _save(fig: plt.Figure, path: Path, values: pd.DataFrame, rect: tuple[float, float, float, float] | None = None
          ) -> Drawn:
    fig.tight_layout(rect=rect)  # rect: room left for a figure legend
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Drawn(path, values=values.reset_index(drop=True))


def _arms(df: pd.DataFrame, keys: Sequence[str]) -> tuple[list[str], list[tuple[tuple, str, pd.DataFrame]]]:
    """Groups of `df` by the setting keys that vary besides warmup shape and length (one panel row each),
    with a label naming the group's task and optimizer and the values that set it apart."""
    other = [k for k in keys if k not in SHAPE_KEYS and k in df and df[k].nunique(dropna=False) > 1]
    groups = [((v if isinstance(v, tuple) else (v,)), g) for v, g in df.groupby(other, sort=True)] if other else [((), df)]
    short = [k for k in ("task", "optimizer") if k in df]
    names = {tuple(g[k].iloc[0] for k in short) for _, g in groups}
    shown = short if len(names) == len(groups) else short + [k for k in other if k not in short]
    return other, [(v, " + ".join(str(g[k].iloc[0]) for k in shown) or "all runs", g) for v, g in groups]


def _setting(row: pd.Series) -> str:
    """`none@0`, `linear@30`: how a warmup setting is written in a sweep."""
    return f"{row['warmup']}@{float(row['warmup_steps']):g}"


def _log_ticks(ax: plt.Axes, which: str, values: Sequence[float]) -> None:
    """Log scale on axis `which` ("x" or "y"), labelled at the values drawn (LR grids are few and round)."""
    getattr(ax, f"set_{which}scale")("log")
    ticks = sorted({float(v) for v in values if np.isfinite(v) and v > 0})
    if 0 < len(ticks) <= 8:
        getattr(ax, f"set_{which}ticks")(ticks, [f"{t:.3g}" for t in ticks], fontsize=7)
        getattr(ax, f"{which}axis").set_minor_locator(ticker.NullLocator())


def _warmup_x(lengths: Sequence[float]) -> tuple[float, list[float]]:
    """symlog threshold (the smallest positive T_w, so 0 sits one decade left of it) and the tick values."""
    ticks = sorted({float(t) for t in lengths if np.isfinite(t)})
    positive = [t for t in ticks if t > 0]
    return (min(positive) if positive else 1.0), ticks


# -- eta_max vs warmup length -----------------------------------------------------------------------
def eta_max_vs_warmup(per_seed: pd.DataFrame, summary: pd.DataFrame, keys: Sequence[str],
                      criteria: Sequence[str], out: Path, lrs: pd.DataFrame | None = None) -> Drawn:
    """eta_max per seed (dots) and its median over seeds with its exact order-statistic interval (bar), against
    warmup length.

    A panel per (arm, criterion). A seed censored `below` (no stable LR in range) is a down arrow at the
    first unstable LR (its eta_max is below it), one censored `above` (every LR stable) an up arrow at the
    largest LR probed. A median that is itself a censored bound is drawn hollow. Rows of `per_seed` and
    `summary` are warmup_lab.stability's eta_max.csv / eta_max_summary.csv. With `lrs` (rows with the setting
    keys and `lr`, e.g. p_stable.csv), an arm probed at fewer than MIN_LRS target LRs is left out.
    """
    if per_seed is None or per_seed.empty or "warmup_steps" not in per_seed:
        return skipped("no eta_max table (a single target LR, or no finished runs)")
    criteria = [c for c in criteria if c in set(per_seed["criterion"])]
    names, arms = _arms(per_seed, keys)
    if lrs is not None and not lrs.empty:  # an arm probed at fewer than MIN_LRS LRs: every seed is an arrow
        counted = dict((v, g["lr"].nunique()) for v, _, g in _arms(lrs, keys)[1])
        arms = [a for a in arms if counted.get(a[0], 0) >= MIN_LRS]
        if not arms:
            return skipped(f"every arm was run at fewer than {MIN_LRS} target LRs, so every seed's eta_max is a "
                           "censored bound: the eta_max tables above hold them", stale=out / "eta_max_vs_warmup.png")
    fig, axes = _grid(len(arms), len(criteria), height=3.4, layout="constrained")
    drawn: list[dict[str, Any]] = []
    for r, (arm_values, arm_label, arm) in enumerate(arms):
        sel = np.ones(len(summary), bool)
        for k, v in zip(names, arm_values):
            sel &= (summary[k] == v).to_numpy()
        arm_summary = summary[sel]
        thresh, ticks = _warmup_x(arm["warmup_steps"].astype(float))
        for c, crit in enumerate(criteria):
            ax = axes[r, c]
            seeds = arm[arm["criterion"] == crit].sort_values(["warmup_steps", "seed"])
            agg = arm_summary[arm_summary["criterion"] == crit].sort_values("warmup_steps")
            marks = _draw_series(ax, seeds, agg, crit, thresh, arm_label)
            drawn += marks
            ax.set_xscale("symlog", linthresh=thresh, linscale=0.5)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            _log_ticks(ax, "y", [d["y"] for d in marks])
            ax.margins(x=0.12, y=0.15)
            ax.set_xlabel("warmup steps T_w")
            ax.set_ylabel("eta_max (target LR)")
            ax.set_title(f"{arm_label}\n{crit}", fontsize=9)
    values = pd.DataFrame(drawn)
    kinds = set(values["kind"]) if len(values) else set()
    medians = values[values["kind"] == "median"] if len(values) else values
    hollow = set(medians["hollow"]) if len(medians) else set()
    L = plt.Line2D
    handles = [h for present, h in (
        ("point" in kinds, L([], [], marker="o", ls="", color="0.5", ms=4, label="one seed")),
        ("below" in kinds, L([], [], marker="v", ls="-", color="tab:red",
                             label="censored seed: no stable LR, eta_max < the first unstable LR")),
        ("above" in kinds, L([], [], marker="^", ls="-", color="tab:blue",
                             label="censored seed: every LR stable, eta_max >= the largest")),
        (False in hollow, L([], [], marker="D", color="black", label=f"median over seeds, {coverage_text(medians)}")),
        (True in hollow, L([], [], marker="D", color="black", mfc="white",
                           label="hollow: the median is itself a censored bound (< or >=)"))) if present]
    width = fig.get_figwidth()
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(len(handles), int(width // 4.5))),
               fontsize=8, frameon=False)
    fig.suptitle("Maximum stable LR vs warmup length", fontsize=10)
    fig.savefig(out / "eta_max_vs_warmup.png", dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return Drawn(out / "eta_max_vs_warmup.png", values=values)


def _draw_series(ax: plt.Axes, seeds: pd.DataFrame, agg: pd.DataFrame, crit: str, thresh: float,
                 arm: str) -> list[dict[str, Any]]:
    """No warmup (black, at T_w = 0) and one series per warmup shape (a colour each, side by side when
    several shapes share a length); each shape's median line starts from the no-warmup median."""
    shape_of = seeds["warmup"] if "warmup" in seeds else pd.Series("", index=seeds.index)
    agg_shape = agg["warmup"] if "warmup" in agg else pd.Series("", index=agg.index)
    shapes = sorted(set(shape_of) - {"none"})
    marks = _draw_seeds(ax, seeds[shape_of == "none"], thresh, arm, "0.3", 0.0)
    base = _draw_medians(ax, agg[agg_shape == "none"], crit, arm, "black", 0.0, None)
    marks += base
    for k, shape in enumerate(shapes):
        shift = (k - (len(shapes) - 1) / 2) * 0.12 if len(shapes) > 1 else 0.0  # decades
        color = SHAPE_COLORS[k % len(SHAPE_COLORS)] if len(shapes) > 1 else "black"
        marks += _draw_seeds(ax, seeds[shape_of == shape], thresh, arm, color if len(shapes) > 1 else "0.45", shift)
        marks += _draw_medians(ax, agg[agg_shape == shape], crit, arm, color, shift, base[0] if base else None,
                               label=shape if len(shapes) > 1 else None)
    if len(shapes) > 1:
        ax.legend(fontsize=7, title="warmup", title_fontsize=7)
    return marks


def _draw_seeds(ax: plt.Axes, seeds: pd.DataFrame, thresh: float, arm: str, color: str,
                shift: float) -> list[dict[str, Any]]:
    """One dot per seed, an arrow per censored seed; drawn as one artist per kind of mark (10,000 runs
    would otherwise be thousands of artists, which is what a figure's layout and drawing scale with)."""
    drawn = []
    marks: dict[str, list[tuple[float, float]]] = {"point": [], "above": [], "below": []}
    for tw, g in seeds.groupby("warmup_steps", sort=True):
        n = len(g)
        for i, (_, row) in enumerate(g.iterrows()):
            offset = shift - 0.05 - (n - 1 - i) * 0.025  # seeds left of their T_w (in decades), the median on it
            x = float(tw) * 10 ** offset if tw > 0 else offset * thresh * 2
            kind = row["censored"] or "point"
            y = float(row["hi"] if kind == "below" else row["eta_max"])
            if not np.isfinite(y):
                continue
            marks[kind].append((x, y))
            drawn.append({"criterion": row["criterion"], "warmup": row.get("warmup", ""), "warmup_steps": float(tw),
                          "seed": row["seed"], "kind": kind, "y": y, "arm": arm})
    if marks["point"]:
        x, y = np.array(marks["point"]).T
        ax.plot(x, y, "o", color=color, ms=4, alpha=0.6, zorder=2)
    for kind, arrow, factor, tip_marker in (("above", "tab:blue", 1.6, "^"), ("below", "tab:red", 1 / 1.6, "v")):
        if not marks[kind]:
            continue  # an arrow from the bound towards where the truth lies
        x, y = np.array(marks[kind]).T
        shafts = np.column_stack([x, x, np.full_like(x, np.nan)]).ravel(), \
            np.column_stack([y, y * factor, np.full_like(y, np.nan)]).ravel()
        ax.plot(*shafts, "-", color=arrow, lw=1.2, zorder=3)
        ax.plot(x, y * factor, tip_marker, color=arrow, ms=5, ls="", zorder=3)
        ax.plot(x, y, "_", color=arrow, ms=7, ls="", zorder=3)
    return drawn


def _draw_medians(ax: plt.Axes, agg: pd.DataFrame, crit: str, arm: str, color: str, shift: float,
                  start: dict[str, Any] | None, label: str | None = None) -> list[dict[str, Any]]:
    drawn = []
    xs, ys = ([start["x"]], [start["y"]]) if start else ([], [])
    for _, row in agg.sort_values("warmup_steps").iterrows():
        tw, y = float(row["warmup_steps"]), float(row["estimate"])
        if not np.isfinite(y):
            continue
        x = tw * 10 ** shift if tw > 0 else tw
        lo, hi = float(row["ci_low"]), float(row["ci_high"])
        yerr = [[max(y - lo, 0) if np.isfinite(lo) else 0], [max(hi - y, 0) if np.isfinite(hi) else 0]]
        hollow = bool(row.get("estimate_censored", ""))
        ax.errorbar([x], [y], yerr=yerr, fmt="D", ms=6, color=color, mfc="white" if hollow else color,
                    capsize=4, lw=1.5, zorder=4)
        xs.append(x)
        ys.append(y)
        drawn.append({"criterion": crit, "warmup": row.get("warmup", ""), "warmup_steps": tw, "seed": None,
                      "kind": "median", "y": y, "ci_low": lo, "ci_high": hi, "arm": arm, "x": x, "hollow": hollow,
                      **{k: row[k] for k in ("interval", "ci_level", "ci_coverage") if k in row}})
    if len(xs) > 1 or (label and xs):
        ax.plot(xs, ys, "-", color=color, lw=1, zorder=3, label=label)
    return drawn


# -- P(stable | LR) -----------------------------------------------------------------------------------
def p_stable_vs_lr(ps: pd.DataFrame, keys: Sequence[str], criteria: Sequence[str], out: Path) -> Drawn:
    """P(stable | LR) from every probe of every seed with its Wilson interval, a line per warmup setting that
    was run at MIN_LRS target LRs or more (fewer make no curve: p_stable.csv holds them); points of unequal n
    (a search's probes) are not joined; a panel per (arm, criterion). Rows of `ps` are warmup_lab.stability's p_stable.csv; n (probes per point) is in each title."""
    if ps is None or ps.empty:
        return skipped("no P(stable) table")
    criteria = [c for c in criteria if c in set(ps["criterion"])]
    ps = ps.groupby(["warmup", "warmup_steps", *[k for k in keys if k not in SHAPE_KEYS]], dropna=False,
                    group_keys=False).filter(lambda g: g["lr"].nunique() >= MIN_LRS)
    if ps.empty:
        return skipped(f"every setting was run at fewer than {MIN_LRS} target LRs: P(stable) is in p_stable.csv, "
                       "a curve would join too few points", stale=out / "p_stable_vs_lr.png")
    _, arms = _arms(ps, keys)
    fig, axes = _grid(len(arms), len(criteria))
    drawn = []
    markers = "osD^v<>P"
    for r, (_, arm_label, arm) in enumerate(arms):
        for c, crit in enumerate(criteria):
            ax = axes[r, c]
            g = arm[arm["criterion"] == crit].sort_values(["warmup_steps", "lr"])
            settings = list(g.groupby(["warmup", "warmup_steps"], sort=False))
            for k, ((shape, tw), s) in enumerate(settings):
                label = f"{shape}@{float(tw):g}"
                shift = 2 ** (0.06 * (k - (len(settings) - 1) / 2))  # settings side by side at one LR
                ax.errorbar(s["lr"] * shift, s["p_stable"], yerr=[(s["p_stable"] - s["p_low"]).clip(lower=0), (s["p_high"] - s["p_stable"]).clip(lower=0)],
                            marker=markers[k % len(markers)], ms=4, lw=1.2, capsize=2, elinewidth=0.8, label=label,
                            alpha=0.85, ls="-" if s["n"].nunique() == 1 else "none")  # a search's uneven n: dots
                drawn += [{"arm": arm_label, "criterion": crit, "setting": label, "lr": lr, "p_stable": p,
                           "p_low": lo, "p_high": hi, "n": n}
                          for lr, p, lo, hi, n in zip(s["lr"], s["p_stable"], s["p_low"], s["p_high"], s["n"])]
            _log_ticks(ax, "x", g["lr"])
            ax.set_ylim(-0.05, 1.05)
            n = sorted(set(g["n"].astype(int)))
            ax.set_title(f"{arm_label}\n{crit}, n={'/'.join(map(str, n))} per point", fontsize=9)
            ax.set(xlabel="target LR", ylabel="P(stable)")
            if ax.has_data():
                ax.legend(fontsize=7, title="warmup", title_fontsize=7)
    fig.suptitle(f"P(stable | LR) per warmup setting, Wilson {CI_LEVEL:.0%} intervals", fontsize=10)
    return _save(fig, out / "p_stable_vs_lr.png", pd.DataFrame(drawn))


# -- per-step curves ------------------------------------------------------------------------------------
def _spread(values: Sequence[float], k: int) -> list[float]:
    """At most k values, evenly spaced over the sorted list (ends kept)."""
    vals = sorted(set(values))
    if len(vals) <= k:
        return vals
    return [vals[i] for i in np.linspace(0, len(vals) - 1, k).round().astype(int)]


def _median_curve(curves: list[pd.DataFrame]) -> pd.Series:
    """Median over seeds at each step, while at least half the seeds are still running."""
    table = pd.concat([c.set_index("step")["loss"] for c in curves], axis=1)
    alive = table.notna().sum(axis=1)
    return table.median(axis=1, skipna=True)[alive >= max(1, math.ceil(len(curves) / 2))]


def _draw_curves(ax: plt.Axes, lines: list[np.ndarray], dots: list[np.ndarray], crosses: list[tuple[float, float]],
                 clipped: list[float]) -> None:
    """Every seed's curve as one LineCollection, its spike steps, divergence steps and non-finite losses
    (at the top edge, where the curve leaves the axis) as one marker artist each."""
    if lines:
        ax.add_collection(LineCollection(lines, lw=0.6, color="tab:blue", alpha=0.45))
        ax.autoscale_view()
    if dots and sum(map(len, dots)):
        x, y = np.concatenate(dots).T
        ax.plot(x, y, ".", color="tab:orange", ms=4)
    if crosses:
        x, y = np.array(crosses, dtype=float).T
        ax.plot(x, y, "x", color="tab:red", ms=6, ls="")
    if clipped:
        ax.plot(clipped, [1.0] * len(clipped), "^", color="tab:purple", ms=6, ls="", clip_on=False, zorder=5,
                transform=ax.get_xaxis_transform())


LOG_SPAN = 10.0  # a panel whose losses span more than this factor (a decade) gets a log y axis


def _loss_y(ax: plt.Axes, values: np.ndarray) -> str:
    """Linear y, or log where the panel's finite losses span more than a decade; every peak stays in view."""
    pos = values[np.isfinite(values) & (values > 0)]
    if len(pos) and pos.max() / pos.min() > LOG_SPAN:
        log_axis(ax, "y")
        return "log"
    return "linear"


def loss_curves(res: pd.DataFrame, curves: Curves, title: str, out: Path) -> Drawn:
    """Training loss vs step of EVERY seed (thin) and their median (thick): a row per warmup setting, a
    column per target LR (at most 3, spread over the grid). Dots: spike steps (consecutive dots = one
    spike event); x: the step a run diverged at (at its last finite loss); purple triangles at the top edge:
    where a loss is non-finite (inf/NaN), the only values not drawn. y shows every finite loss, the highest
    peak included: linear, log where a panel's losses span more than a decade.

    `values`: a row per seed drawn (kind "seed", with its highest finite loss `peak` and the panel's
    `yscale`) and a row per non-finite stretch of a seed's curve (kind "nonfinite", its first `step`)."""
    settings = res[list(SHAPE_KEYS)].drop_duplicates().sort_values("warmup_steps")
    lrs = _spread(pd.to_numeric(res["target_lr"], errors="coerce").dropna(), MAX_LRS)
    if settings.empty or not lrs:
        return skipped("no finished runs")
    cols = len(lrs)
    width = max(3.6 * cols, 5.6)  # one column: wide enough for the title and the legend
    fig, axes = plt.subplots(len(settings), cols, figsize=(width, 2.5 * len(settings) + 0.9), squeeze=False,
                             layout="constrained")
    drawn: list[dict[str, Any]] = []
    any_clipped = False
    for r, (_, st) in enumerate(settings.iterrows()):
        for c, lr in enumerate(lrs):
            ax = axes[r, c]
            g = res[(res["warmup"] == st["warmup"]) & (res["warmup_steps"] == st["warmup_steps"])
                    & np.isclose(res["target_lr"].astype(float), lr)]
            seeds, lines, dots, crosses, clipped, rows = [], [], [], [], [], []
            for _, row in g.sort_values("seed").iterrows():
                m = curves.get(row)
                if m is None or "loss" not in m:
                    continue
                raw = pd.to_numeric(m["loss"], errors="coerce").to_numpy(float)
                bad = ~np.isfinite(raw)
                loss = pd.Series(np.where(bad, np.nan, raw))
                steps = m["step"].to_numpy(float)
                lines.append(np.column_stack([steps, loss.to_numpy()]))
                if "spike" in m:
                    hit = (m["spike"].astype(float) > 0).to_numpy() & ~bad
                    dots.append(lines[-1][hit])
                starts = np.flatnonzero(bad & ~np.r_[False, bad[:-1]])  # each non-finite stretch, once
                clipped += steps[starts].tolist()
                if row["status"] == runs.DIVERGED:
                    finite = loss[np.isfinite(loss)]
                    if len(finite):
                        crosses.append((steps[finite.index[-1]], finite.iloc[-1]))
                seeds.append(m.assign(loss=loss.to_numpy()))
                rows.append({"kind": "seed", "setting": _setting(st), "lr": lr, "seed": row["seed"],
                             "status": row["status"], "steps": len(m), "step": math.nan,
                             "peak": float(np.nanmax(loss)) if np.isfinite(loss).any() else math.nan})
                rows += [{"kind": "nonfinite", "setting": _setting(st), "lr": lr, "seed": row["seed"],
                          "status": row["status"], "steps": len(m), "step": float(steps[i]), "peak": math.nan}
                         for i in starts]
            _draw_curves(ax, lines, dots, crosses, clipped)
            any_clipped |= bool(clipped)
            med = _median_curve(seeds) if seeds else pd.Series(dtype=float)
            if len(med):
                ax.plot(med.index, med.to_numpy(), lw=2, color="black")
            finite = np.concatenate([ln[:, 1] for ln in lines]) if lines else np.array([])
            scale = _loss_y(ax, finite)
            drawn += [{**d, "yscale": scale, "y_top": ax.get_ylim()[1]} for d in rows]
            if not seeds:
                ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", va="center", fontsize=8,
                        color="0.4", style="italic")
                ax.set_xticks([])  # no axis to read: no 0..1 ticks that look like data
                ax.set_yticks([])
            ax.set_title(f"{_setting(st)}, lr={lr:.3g} (n={len(seeds)})", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == len(settings) - 1:
                ax.set_xlabel("step", fontsize=8)
            if c == 0:
                ax.set_ylabel("train loss", fontsize=8)
    if not drawn:
        plt.close(fig)
        return skipped("no per-step curves for these runs (no metrics.csv, no curves.csv.gz)")
    fig.suptitle("\n".join(textwrap.wrap(f"Training loss, every seed: {title}", int(width * 12))), fontsize=10)
    handles = [plt.Line2D([], [], lw=0.6, color="tab:blue", alpha=0.6, label="one seed"),
               plt.Line2D([], [], lw=2, color="black", label="median over seeds"),
               plt.Line2D([], [], marker=".", ls="", color="tab:orange", ms=6, label="spike step"),
               plt.Line2D([], [], marker="x", ls="", color="tab:red", ms=6, label="diverged (last finite loss)")]
    if any_clipped:
        handles.append(plt.Line2D([], [], marker="^", ls="", color="tab:purple", ms=6,
                                  label="loss non-finite (inf/NaN): not drawn, marked at the top edge"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles) if width >= 10 else 2, fontsize=7,
               frameon=False)
    path = out / f"loss_curves_{slug(title)}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return Drawn(path, values=pd.DataFrame(drawn))


IDENTICAL_STYLES = ((0, (4, 3)), (0, (1, 2)), (0, (6, 2, 1, 2)))  # dashed, dotted, dash-dot: a curve over an equal one


def lr_curves(res: pd.DataFrame, curves: Curves, title: str, out: Path, log_y: bool = False) -> Drawn:
    """LR vs step of each warmup setting at the largest target LR every setting ran (a search probes
    each setting at its own LRs), or, when they share none, each at its own largest LR, named in the
    legend. The schedule does not depend on the seed: one run per setting, the one that ran longest, as a
    diverged run stops early."""
    lrs = res.assign(_lr=res["target_lr"].astype(float)).groupby(list(SHAPE_KEYS), sort=True)["_lr"]
    shared = set.intersection(*(set(v) for _, v in lrs)) if len(res) else set()
    fig, ax = plt.subplots(figsize=(5.2, 3.6), layout="constrained")
    drawn: list[dict[str, Any]] = []
    shown: list[tuple[str, np.ndarray, np.ndarray]] = []  # (label, steps, lr) of the curves drawn so far
    for (shape, tw), g in res.groupby(list(SHAPE_KEYS), sort=True):
        g = g.assign(_lr=g["target_lr"].astype(float))
        g = g[g["_lr"] == max(shared)] if shared else g
        for _, row in g.sort_values(["_lr", "steps_run"], ascending=False).iterrows():
            m = curves.get(row)
            if m is not None and "lr" in m:
                name = f"{shape}@{float(tw):g}" + ("" if shared else f", lr={row['_lr']:.3g}")
                steps, lr = m["step"].to_numpy(float), pd.to_numeric(m["lr"], errors="coerce").to_numpy(float)
                same = next((lab for lab, s0, l0 in shown if len(s0) == len(steps) and np.array_equal(s0, steps)
                             and np.allclose(l0, lr, rtol=1e-9, atol=0, equal_nan=True)), None)
                k = 1 + sum(d["identical_to"] == same for d in drawn) if same else 0  # the k-th drawn over it
                style = IDENTICAL_STYLES[(k - 1) % len(IDENTICAL_STYLES)] if same else "-"
                label = name + (f" (identical to {same})" if same else "")
                ax.plot(steps, lr, lw=1.2 if same else 1.8, ls=style, label=label,
                        zorder=2 + (k if same else 0), alpha=1.0 if same else 0.75)
                shown.append((name, steps, lr))
                drawn.append({"setting": f"{shape}@{float(tw):g}", "lr": row["_lr"], "seed": row["seed"],
                              "identical_to": same or "", "linestyle": style})
                break
    if not drawn:
        plt.close(fig)
        return skipped("no per-step curves with an lr column for these runs")
    ax.set(xlabel="step", ylabel="learning rate", yscale="log" if log_y else "linear")
    at = f"target lr={max(shared):.3g}" if shared else "each setting's largest target lr (no LR shared)"
    ax.set_title("\n".join([f"LR schedules at {at}:", *textwrap.wrap(title, 60)]), fontsize=8)
    ax.legend(fontsize=7, title="warmup", title_fontsize=7)
    path = out / f"lr_curves_{slug(title)}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return Drawn(path, values=pd.DataFrame(drawn))


# -- heatmap -------------------------------------------------------------------------------------------
HEATMAP_MAX_WIDTH = 12.0  # inches: a wider grid gets narrower cells and smaller text, not a wider figure
EMPTY_COLOR = "0.88"  # a cell with no run: light grey, hatched, "no runs"


def luminance(rgba: Sequence[float]) -> float:
    """Relative luminance (WCAG, sRGB) of a colour: the text on a cell is black above 0.4, white below."""
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def text_color(rgba: Sequence[float]) -> str:
    """Black on light cells, white on dark ones (whichever contrasts more with the cell's colour)."""
    lum = luminance(rgba)
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


def heatmap(cells: pd.DataFrame, title: str, metric: str, out: Path,
            limits: tuple[float, float] | None = None) -> Drawn:
    """Mean final metric over target LR (x) x warmup length (y), with n (seeds) in every cell and the
    number of diverged seeds; cells where a seed diverged are hatched red, cells with no run grey and
    hatched ("no runs"); the text is black on light cells and white on dark ones. `limits` (vmin, vmax): one
    colour scale shared by every heatmap of a metric in a report, so equal colours mean equal values. A wide
    grid keeps the figure at most HEATMAP_MAX_WIDTH inches: its text shrinks and its LR labels turn."""
    if cells.empty or (cells["target_lr"].nunique() < 2 and cells["warmup_steps"].nunique() < 2):
        return skipped("a single target LR and warmup length: nothing to map")
    grid = cells.pivot_table(index="warmup_steps", columns="target_lr", values="mean", aggfunc="mean", dropna=False)
    n = cells.pivot_table(index="warmup_steps", columns="target_lr", values="n", aggfunc="sum").reindex_like(grid)
    div = cells.pivot_table(index="warmup_steps", columns="target_lr", values="n_diverged", aggfunc="sum")
    div = div.reindex_like(grid).fillna(0)
    rows, cols = grid.shape
    width = min(HEATMAP_MAX_WIDTH, max(4.5, 1.8 + 0.95 * cols))
    cell_w = (width - 1.8) / cols  # inches per column
    n_max, d_max = int(n.fillna(0).to_numpy().max()), int(div.to_numpy().max())
    chars = max(7, len(f"n={n_max}" + (f", {d_max} div" if d_max else "")),
                *(len(f"{v:.3g}") for v in grid.to_numpy(dtype=float).ravel() if np.isfinite(v)))
    # the longest line fills at most 85% of a cell (a character ~0.6 em wide): smaller text in narrower cells
    fontsize = float(np.clip(0.85 * cell_w * 72 / (0.6 * chars), 4.5, 7.5))
    turn = cell_w < 0.75  # LR labels such as 0.00566 overlap below ~0.75 inch a column
    fig, ax = plt.subplots(figsize=(width, 2.2 + (0.5 if turn else 0) + 0.6 * rows), layout="constrained")
    cmap = plt.get_cmap("viridis" if "acc" in metric else "viridis_r").with_extremes(bad=EMPTY_COLOR)
    values = np.where(n.fillna(0).to_numpy() > 0, grid.to_numpy(dtype=float), np.nan)  # no run: no value
    vmin, vmax = limits if limits is not None else (None, None)
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", origin="lower", vmin=vmin, vmax=vmax)
    drawn, empty_any, div_any = [], False, False
    for (i, j), v in np.ndenumerate(values):
        d, k = int(div.iat[i, j]), n.iat[i, j]
        k = 0 if pd.isna(k) else int(k)
        empty = k == 0
        if empty:
            text = "no runs"
        else:
            text = ("-" if not np.isfinite(v) else f"{v:.3g}") + f"\nn={k}" + (f", {d} div" if d else "")
        face = cmap(im.norm(v)) if np.isfinite(v) else matplotlib.colors.to_rgba(EMPTY_COLOR)
        color = "darkred" if d else text_color(face)
        box = dict(facecolor="white", alpha=0.8, lw=0, pad=1) if d else None
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color, bbox=box,
                style="italic" if empty else "normal")
        if empty:
            empty_any = True
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", edgecolor="0.6", lw=0))
        elif d:
            div_any = True
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="red", lw=0))
        drawn.append({"warmup_steps": grid.index[i], "target_lr": grid.columns[j], "mean": v, "n": k, "n_diverged": d,
                      "empty": empty, "text": text, "text_color": color, "fontsize": fontsize})
    ax.set_xticks(range(cols), [f"{c:.3g}" for c in grid.columns], fontsize=7,
                  rotation=45 if turn else 0, ha="right" if turn else "center", rotation_mode="anchor")
    ax.set_yticks(range(rows), [f"{r:g}" for r in grid.index], fontsize=7)
    ax.set(xlabel="target LR", ylabel="warmup steps")
    ax.set_title("\n".join(textwrap.wrap(title, max(30, int(width * 11)))), fontsize=9)
    fig.colorbar(im, ax=ax, label=metric)
    handles = ([matplotlib.patches.Patch(facecolor="white", edgecolor="red", hatch="//", lw=0,
                                         label="k seeds diverged (k div)")] if div_any else []) + \
        ([matplotlib.patches.Patch(facecolor=EMPTY_COLOR, edgecolor="0.6", hatch="xx", lw=0, label="no runs")]
         if empty_any else [])
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False,
                   handlelength=2.5, handleheight=1.4)
    path = out / f"heatmap_{slug(title)}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return Drawn(path, values=pd.DataFrame(drawn))
