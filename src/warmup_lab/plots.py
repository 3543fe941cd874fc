"""The report's figures: LR curves, loss curves with spikes, metric heatmaps, eta_max vs warmup length.

Headless (Agg) and small (dpi 100). Each function returns the PNG's path, or a one-line reason when its
data is absent, so the report says why a figure is missing instead of failing.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from warmup_lab import runs  # noqa: E402

DPI = 100
MAX_CURVES = 5


def note_or_link(result: Path | str) -> str:
    """A Markdown image link for a figure, or the reason it was skipped."""
    if isinstance(result, Path):
        return f"![{result.stem}]({result.name})"
    return f"_Figure skipped: {result}._"


def _name(prefix: str, title: str) -> str:
    text = re.sub(r"\b(task|optimizer|warmup)=", "", title)
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9.]+', '_', text).strip('_') or 'all'}.png"


def _panels(n: int, width: float = 4.6, height: float = 3.4) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _spread(values: Iterable, k: int = MAX_CURVES) -> list:
    """At most k values, evenly spaced over the sorted list (ends kept)."""
    vals = sorted(set(values))
    if len(vals) <= k:
        return vals
    return [vals[i] for i in np.linspace(0, len(vals) - 1, k).round().astype(int)]


def _metrics(run_path: str) -> pd.DataFrame | None:
    path = Path(run_path) / runs.METRICS_FILE
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def lr_curves(res: pd.DataFrame, title: str, out: Path, log_y: bool = False) -> Path | str:
    """lr vs step, a panel per shape, one line per warmup length: of the first seed's runs, the one that ran
    longest (a diverged run stops early), at the largest target LR among those."""
    shapes = sorted(res["warmup"].astype(str).unique())
    fig, axes = _panels(len(shapes))
    drawn = 0
    for ax, shape in zip(axes, shapes):
        g = res[res["warmup"].astype(str) == shape]
        g = g[g["seed"] == g["seed"].min()].sort_values(["steps_run", "target_lr"], ascending=False)
        for tw in _spread(g["warmup_steps"]):
            row = g[g["warmup_steps"] == tw].iloc[0]
            m = _metrics(row["run_path"])
            if m is None or "lr" not in m:
                continue
            ax.plot(m["step"], m["lr"], label=f"T_w={tw:g}, lr={row['target_lr']:.3g}")
            drawn += 1
        ax.set(title=f"warmup={shape}", xlabel="step", ylabel="lr")
        if log_y:
            ax.set_yscale("log")
        if ax.has_data():
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        return "no metrics.csv with an lr column in these runs"
    fig.suptitle(f"LR schedules\n{title}", fontsize=9)
    return _save(fig, out / _name("lr_curves", title))


def loss_curves(res: pd.DataFrame, title: str, out: Path) -> Path | str:
    """Training loss vs step, a panel per shape: first seed, median warmup length, one line per target LR.

    Spikes (metrics.csv `spike`) are dots; a diverged run ends in an x. The y range is capped at
    10 x the largest init loss so a divergence does not flatten every other curve.
    """
    shapes = sorted(res["warmup"].astype(str).unique())
    fig, axes = _panels(len(shapes))
    drawn = 0
    for ax, shape in zip(axes, shapes):
        g = res[(res["warmup"].astype(str) == shape)]
        g = g[g["seed"] == g["seed"].min()]
        lengths = sorted(g["warmup_steps"].unique())
        tw = lengths[len(lengths) // 2]
        g = g[g["warmup_steps"] == tw]
        top = 10 * np.nanmax(pd.to_numeric(g["init_loss"], errors="coerce").to_numpy(dtype=float), initial=1.0)
        for lr in _spread(g["target_lr"].dropna()):
            row = g[g["target_lr"] == lr].iloc[0]
            m = _metrics(row["run_path"])
            if m is None or "loss" not in m:
                continue
            loss = pd.to_numeric(m["loss"], errors="coerce").clip(upper=top)
            (line,) = ax.plot(m["step"], loss, lw=1, label=f"lr={lr:.3g} ({row['status']})")
            drawn += 1
            if "spike" in m:
                hit = m["spike"].astype(float) > 0
                ax.scatter(m["step"][hit], loss[hit], s=14, color=line.get_color(), zorder=3)
            if row["status"] == runs.DIVERGED:
                last = loss[np.isfinite(loss)]
                y = last.iloc[-1] if len(last) else top
                step = row.get("diverged_step")
                step = m["step"].iloc[-1] if step is None or pd.isna(step) else step
                ax.scatter([step], [y if np.isfinite(y) else top], marker="x", s=60, color=line.get_color(), zorder=4)
        ax.set(title=f"warmup={shape}, T_w={tw:g}", xlabel="step", ylabel="train loss", yscale="log")
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        if ax.has_data():
            ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return "no metrics.csv with a loss column in these runs"
    fig.suptitle(f"Train loss (dots: spikes, x: divergence)\n{title}", fontsize=9)
    return _save(fig, out / _name("loss_curves", title))


def heatmap(cells: pd.DataFrame, title: str, metric: str, out: Path) -> Path | str:
    """Mean final metric over target LR (x) x warmup length (y); cells where a seed diverged are hatched."""
    if cells["target_lr"].nunique() < 2 and cells["warmup_steps"].nunique() < 2:
        return "a single target LR and warmup length: nothing to map"
    grid = cells.pivot_table(index="warmup_steps", columns="target_lr", values="mean", aggfunc="mean", dropna=False)
    div = cells.pivot_table(index="warmup_steps", columns="target_lr", values="n_diverged", aggfunc="sum")
    div = div.reindex_like(grid).fillna(0)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 + 0.9 * grid.shape[1]), 1.6 + 0.55 * grid.shape[0]))
    cmap = plt.get_cmap("viridis" if "acc" in metric else "viridis_r").with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=float)), cmap=cmap, aspect="auto", origin="lower")
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        d = div.iat[i, j]
        text = ("-" if not np.isfinite(v) else f"{v:.3g}") + (f"\n×{int(d)} div" if d else "")
        light = np.isfinite(v) and sum(cmap(im.norm(v))[:3]) > 1.8  # dark text on yellow cells
        box = dict(facecolor="white", alpha=0.8, lw=0, pad=1) if d else None
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="red" if d else "black" if light else "white",
                bbox=box)
        if d:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="red", lw=0))
    ax.set_xticks(range(grid.shape[1]), [f"{c:.2g}" for c in grid.columns], fontsize=8)
    ax.set_yticks(range(grid.shape[0]), [f"{r:g}" for r in grid.index], fontsize=8)
    ax.set(xlabel="target LR", ylabel="warmup steps")
    ax.set_title(title.replace(", warmup=", "\nwarmup="), fontsize=8)
    fig.colorbar(im, ax=ax, label=metric)
    return _save(fig, out / _name("heatmap", title))


def eta_max_vs_warmup(eta: pd.DataFrame, keys: list[str], out: Path) -> Path | str:
    """eta_max (geometric mean over seeds, bars = min..max) vs warmup length, a line per shape.

    `keys` are the setting columns; those besides shape and length that vary get a panel each."""
    if eta is None or eta.empty or "eta_max" not in eta:
        return "no eta_max (no search outputs and a single target LR)"
    if "warmup_steps" not in eta:
        return "the eta_max table has no warmup length column"
    e = eta.assign(eta_max=pd.to_numeric(eta["eta_max"], errors="coerce"),
                   warmup_steps=pd.to_numeric(eta["warmup_steps"], errors="coerce"))
    e = e[(e["eta_max"] > 0) & e["warmup_steps"].notna()]
    if e.empty:
        return "no finite eta_max (no setting trained stably)"
    shape = "warmup" if "warmup" in e else None
    other = [c for c in keys if c not in ("seed", "warmup_steps", shape) and e[c].nunique(dropna=False) > 1]
    groups = list(e.groupby(other)) if other else [((), e)]
    fig, axes = _panels(len(groups), width=5.5, height=3.8)
    markers = "osD^v<>"
    for ax, (values, g) in zip(axes, groups):
        lines = list(g.groupby(shape)) if shape else [("all", g)]
        for k, (name, s) in enumerate(lines):
            a = s.groupby("warmup_steps")["eta_max"].agg(
                geo=lambda v: float(np.exp(np.log(v).mean())), lo="min", hi="max").reset_index()
            shift = 1 + 0.03 * (k - (len(lines) - 1) / 2)  # keep coinciding lines and bars apart
            ax.errorbar((a["warmup_steps"] * shift).to_numpy(), a["geo"].to_numpy(), marker=markers[k % len(markers)],
                        capsize=3, yerr=[(a["geo"] - a["lo"]).clip(lower=0).to_numpy(),
                                         (a["hi"] - a["geo"]).clip(lower=0).to_numpy()],
                        label=str(name), alpha=0.85)
        ax.set(xscale="symlog", yscale="log", xlabel="warmup steps", ylabel="eta_max")
        ticks = sorted(g["warmup_steps"].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        values = values if isinstance(values, tuple) else (values,)
        name = ", ".join(f"{k}={v}" for k, v in zip(other, values))
        head = textwrap.fill(f"eta_max vs warmup length{': ' + name if name else ''}", width=70)
        ax.set_title(f"{head}\n(geometric mean; bars: min..max over seeds)", fontsize=9)
        ax.legend(fontsize=8, title="shape" if shape else None)
    return _save(fig, out / "eta_max_vs_warmup.png")
