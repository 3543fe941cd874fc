"""Analysis of the mechanisms experiments: the numbers the papers predict, measured on our runs.

`python -m warmup_lab.mechanisms sweeps/mechanisms --out results/mechanisms` reads the run directories
of `conf/experiment/mechanisms/` (each part names its runs `<part>-...`) and writes report.md, one CSV
per table and one PNG per part:
- edge of stability (Cohen et al. 2021): late-phase sharpness / (2/eta), the ratio they find at or just above 1;
- catapult (Lewkowycz et al. 2020): the phase of each c = eta * lambda0 (lazy / catapult / diverged) and
  the measured boundaries per seed beside 2 and 4, their median and range over seeds, the end sharpness
  against 2/eta;
- warmup (Kalra & Barkeshli 2024): the largest trainable c per warmup length and seed, its median and
  range over seeds;
- Pre-LN vs Post-LN (Xiong et al. 2020): final training loss per LR and warmup, median and range over
  seeds, and the gradient norm of each layer's FFN output weight at initialisation (their Figure 3).
Over seeds every table gives the median and the range (min, max), not a mean: a mean of grid values,
some of them bounds, is a number no run produced. "Trainable" is the harness's own: status `completed`
and `stability.eta_max_of`, the eta_max rule of every other report, run on c; the phases use the
harness's statuses and sit beside its catapult detector (detectors.py), so the calibration tests those
instruments rather than a second definition of them.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from warmup_lab import runs
from warmup_lab.record import SHARPNESS_FILE
from warmup_lab.stability import bound_text, eta_max_of, median_and_range
from warmup_lab.summary import is_finished, read_summary

PARTS = ("eos", "sharpening", "catapult", "warmup", "preln")
LATE_FRACTION = 0.5  # "late phase" = the last half of a run's sharpness measurements
LAZY, CATAPULT, DIVERGED = "lazy", "catapult", "diverged"
CATAPULT_RISE = 1.01  # catapult: the loss climbs 1% above its minimum so far (lazy GD never does); the run completes


# -- reading runs ------------------------------------------------------------------------------
def _floats(path: Path, column: str) -> list[float]:
    if not path.exists():
        return []
    return [float(r[column]) if r[column] not in ("", "None") else math.nan for r in csv.DictReader(path.open())]


def _number(value: object) -> float:
    """A summary value as a float (a missing one, None, as NaN), so a loss column stays numeric."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


RUNS_ARCHIVE = "runs.parquet"  # load_runs' table, per-step lists included: the report is redrawn from it on a fresh clone


def load_runs(root: Path | str) -> pd.DataFrame:
    """One row per finished run under `root`: its part, settings, status, lambda0, eta and curves. A folder
    with no run directories but a committed `runs.parquet` (written by `build_report`) is read from that."""
    root = Path(root)
    run_dirs = runs.find_run_dirs([root])
    if not run_dirs and (root / RUNS_ARCHIVE).is_file():
        df = pd.read_parquet(root / RUNS_ARCHIVE)
        for col in ("losses", "sharp_steps", "sharpness"):
            df[col] = [[float(x) for x in v] for v in df[col]]
        df.attrs["archive"] = str(root / RUNS_ARCHIVE)
        return df
    rows = []
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        if not is_finished(summary):
            continue
        cfg = OmegaConf.load(run_dir / runs.CONFIG_FILE)
        part = str(cfg.get("name", run_dir.name)).split("-")[0]
        if part not in PARTS:
            continue
        info = summary.get("task_info", {})
        losses = _floats(run_dir / runs.METRICS_FILE, "loss")
        rows.append({
            "part": part, "run_dir": str(run_dir), "config_hash": summary.get("config_hash") or str(run_dir),
            "status": summary["status"], "seed": summary["seed"],
            "activation": OmegaConf.select(cfg, "model.activation"), "norm": summary.get("norm"),
            "warmup": summary.get("warmup"), "warmup_steps": summary.get("warmup_steps") or 0,
            "target_lr": summary["target_lr"], "c": info.get("lr_in_sharpness_units"), "steps": summary["train_steps"],
            "lambda0": info.get("lambda0"), "init_loss": _number(summary.get("init_loss")),
            "final_train_loss": _number(summary.get("final_train_loss")), "catapult_count": summary.get("catapult_count", 0),
            "peak_loss_ratio": max((x for x in losses if math.isfinite(x)), default=math.nan) / losses[0]
            if losses else math.nan,
            "losses": losses, "sharp_steps": _floats(run_dir / SHARPNESS_FILE, "step"),
            "sharpness": _floats(run_dir / SHARPNESS_FILE, "sharpness"),
        })
    # A run reached twice (renamed, e.g. catapult's seed-0 runs before names carried `-s<seed>`) counts once.
    return pd.DataFrame(rows).drop_duplicates("config_hash", ignore_index=True) if rows else pd.DataFrame()


# -- definitions -------------------------------------------------------------------------------
def late_sharpness_ratio(sharpness: Sequence[float], eta: float, fraction: float = LATE_FRACTION) -> dict[str, float]:
    """sharpness / (2/eta) over the last `fraction` of the measurements: mean, min and max."""
    values = [s * eta / 2 for s in sharpness if math.isfinite(s)]
    late = values[int(len(values) * (1 - fraction)):] or values
    if not late:
        return {"mean": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": sum(late) / len(late), "min": min(late), "max": max(late)}


def rise_ratio(losses: Sequence[float]) -> float:
    """max over t of loss[t] / min(loss[:t]): how far the loss ever climbed above its best so far
    (< 1 for a loss that only falls). Non-finite losses are skipped."""
    best, worst = math.inf, 0.0
    for x in losses:
        if not math.isfinite(x):
            continue
        if best < math.inf:
            worst = max(worst, x / best) if best > 0 else worst
        best = min(best, x)
    return worst


def phase(status: str, losses: Sequence[float], rise: float = CATAPULT_RISE) -> str:
    """Lewkowycz et al.'s three phases: diverged, catapult, lazy.

    diverged: the run's status is not `completed` (the harness's divergence detector fired, or the
    final loss is not below the initial one); catapult: it completed, and at some step the loss rose
    above `rise` x its minimum so far (their "the loss first grows, then falls"); lazy: otherwise.
    The harness's catapult detector (rise 2x a median-of-5, for mid-training events) is reported
    beside this, not used: it cannot fire in the first 5 steps, where GD's catapult happens.
    """
    if status != runs.COMPLETED:
        return DIVERGED
    return CATAPULT if rise_ratio(losses) > rise else LAZY


def trainable_range(cs: Sequence[float], trainable: Sequence[bool]) -> dict[str, object]:
    """`stability.eta_max_of` on c: the largest trainable c, the first untrainable c above it, and the
    censoring ("above": trained up to the grid's top, a lower bound; "below": nothing trained,
    first_untrainable_c = the grid's bottom)."""
    r = eta_max_of(cs, trainable)
    return {"largest_trainable_c": r["eta_max"], "first_untrainable_c": r["hi"], "censored": r["censored"],
            "non_monotone": r["non_monotone"]}


def phase_boundaries(cs: Sequence[float], phases: Sequence[str]) -> dict[str, object]:
    """On a sorted grid: the last lazy c before the first non-lazy one, the first catapult c (nan when
    absent), and the trainable range's ends (`trainable_range`; diverged = not completed)."""
    pairs = sorted(zip(cs, phases))
    first_non_lazy = next((c for c, p in pairs if p != LAZY), math.nan)
    tr = trainable_range([c for c, _ in pairs], [p != DIVERGED for _, p in pairs])
    return {
        "last_lazy": max((c for c, p in pairs if p == LAZY and not c > first_non_lazy), default=math.nan),
        "first_catapult": next((c for c, p in pairs if p == CATAPULT), math.nan),
        "last_trainable": tr["largest_trainable_c"], "first_diverged": tr["first_untrainable_c"],
        "trainable_censored": tr["censored"],
    }


def over_seeds(values: Sequence[float], bounds: Sequence[float] | None = None,
               censored: Sequence[str] | None = None) -> dict[str, object]:
    """Median and range (min, max) of a c over seeds (`stability.median_and_range`), censored seeds at
    their bound; a seed with no value and no censoring (a boundary absent from its grid) is left out."""
    frame = pd.DataFrame({"eta_max": pd.to_numeric(pd.Series(list(values)), errors="coerce"),
                          "hi": list(bounds) if bounds is not None else math.nan,
                          "censored": list(censored) if censored is not None else ""})
    return median_and_range(frame[frame.eta_max.notna() | frame.censored.eq("below")])


# -- gradient norms at initialisation (Xiong et al. 2020, Figure 3) -----------------------------
def ffn_grad_norms(norm_position: str, n_layers: int, seed: int, d_model: int = 32, batch_size: int = 64,
                   init: str = "xavier") -> list[float]:
    """||dL/dW|| of each block's FFN output weight at initialisation, on one batch of the reverse task."""
    from warmup_lab.data.sequences import copy_reverse
    from warmup_lab.models.transformer import build_transformer
    from warmup_lab.tasks.sequence import _loss

    data = copy_reverse("reverse", 8, 16, 64, 0, seed, batch_size, "cpu")
    cfg = OmegaConf.create({"family": "transformer", "d_model": d_model, "n_layers": n_layers, "n_heads": 4,
                            "norm_position": norm_position, "qk_layernorm": False, "init": init})
    model = build_transformer(cfg, data.vocab_size, data.seq_len, seed)
    _loss(model, data.batch(0)).backward()
    return [float(block.mlp[2].weight.grad.norm()) for block in model.blocks]


def grad_norm_table(depths: Sequence[int] = (6, 12, 24), seeds: Sequence[int] = (0, 1, 2)) -> pd.DataFrame:
    rows = []
    for norm in ("pre", "post"):
        for depth in depths:
            for seed in seeds:
                with torch.random.fork_rng(devices=[]):
                    norms = ffn_grad_norms(norm, depth, seed)
                rows += [{"norm": norm, "depth": depth, "seed": seed, "layer": i + 1, "grad_norm": g}
                         for i, g in enumerate(norms)]
    return pd.DataFrame(rows)


# -- tables ------------------------------------------------------------------------------------
def eos_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in df[df.part == "eos"].itertuples():
        late = late_sharpness_ratio(r.sharpness, r.target_lr)
        rows.append({"activation": r.activation, "c": r.c, "lambda0": r.lambda0, "eta": r.target_lr,
                     "two_over_eta": 2 / r.target_lr, "late_ratio_mean": late["mean"], "late_ratio_min": late["min"],
                     "late_ratio_max": late["max"], "max_sharpness_ratio": max(r.sharpness) * r.target_lr / 2,
                     "final_train_loss": r.final_train_loss, "status": r.status})
    return pd.DataFrame(rows).sort_values(["activation", "c"]) if rows else pd.DataFrame()


SHARPENING_START, SHARPENING_REACHED = 0.6, 0.9  # issue 13's bar: from <= 0.6 of 2/eta to >= 0.9, and stays


def sharpening_table(df: pd.DataFrame) -> pd.DataFrame:
    """Progressive sharpening per run: sharpness / (2/eta) at the first measurement, the first step at which
    it reaches SHARPENING_REACHED, the lowest ratio after that step (does it stay?), its maximum, and the
    late-phase mean, min and max (last LATE_FRACTION of the measurements)."""
    rows = []
    for r in df[df.part == "sharpening"].itertuples():
        ratio = [x * r.target_lr / 2 for x in r.sharpness]
        first = next((i for i, x in enumerate(ratio) if x >= SHARPENING_REACHED), None)
        late = late_sharpness_ratio(r.sharpness, r.target_lr)
        rows.append({"activation": r.activation, "c": r.c, "seed": r.seed, "lambda0": r.lambda0, "eta": r.target_lr,
                     "start_ratio": ratio[0] if ratio else math.nan,
                     "first_step_reached": r.sharp_steps[first] if first is not None else math.nan,
                     "lowest_after_reached": min(ratio[first:]) if first is not None else math.nan,
                     "max_ratio": max(ratio) if ratio else math.nan, "late_ratio_mean": late["mean"],
                     "late_ratio_min": late["min"], "late_ratio_max": late["max"],
                     "reproduced": bool(ratio and ratio[0] <= SHARPENING_START and first is not None
                                        and min(ratio[first:]) >= SHARPENING_REACHED),
                     "final_train_loss": r.final_train_loss, "status": r.status})
    return pd.DataFrame(rows).sort_values(["activation", "c", "seed"]) if rows else pd.DataFrame()


def catapult_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in df[df.part == "catapult"].itertuples():
        end = r.sharpness[-1] if r.sharpness else math.nan
        rows.append({"activation": r.activation, "seed": r.seed, "c": r.c, "lambda0": r.lambda0, "eta": r.target_lr,
                     "status": r.status, "phase": phase(r.status, r.losses), "rise_ratio": rise_ratio(r.losses),
                     "peak_loss_ratio": r.peak_loss_ratio, "detector_catapults": r.catapult_count,
                     "end_sharpness_ratio": end * r.target_lr / 2, "final_train_loss": r.final_train_loss})
    return pd.DataFrame(rows).sort_values(["activation", "seed", "c"]) if rows else pd.DataFrame()


BOUNDARIES = ("last_lazy", "first_catapult", "last_trainable", "first_diverged")


def catapult_boundaries(tab: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The phase boundaries per (activation, seed): the seed sets the init, hence lambda0 and where the
    phases change; and per activation and boundary their median and range over seeds."""
    per_seed = pd.DataFrame([{"activation": act, "seed": seed, **phase_boundaries(list(g.c), list(g.phase))}
                             for (act, seed), g in tab.groupby(["activation", "seed"])])
    summary = pd.DataFrame([
        {"activation": act, "boundary": b,
         **(over_seeds(g[b], g.first_diverged, g.trainable_censored) if b == "last_trainable" else over_seeds(g[b]))}
        for act, g in per_seed.groupby("activation") for b in BOUNDARIES])
    return per_seed, summary


def warmup_tables(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trainable range per (activation, warmup length, seed), and the largest trainable c's median and
    range over seeds with the number censored."""
    sub = df[df.part == "warmup"]
    per_seed = pd.DataFrame([
        {"activation": act, "warmup_steps": int(w), "seed": seed,
         **trainable_range(list(g.c), list(g.status == runs.COMPLETED))}
        for (act, w, seed), g in sub.groupby(["activation", "warmup_steps", "seed"])])
    if per_seed.empty:
        return per_seed, per_seed
    summary = pd.DataFrame([
        {"activation": act, "warmup_steps": w,
         **over_seeds(g.largest_trainable_c, g.first_untrainable_c, g.censored)}
        for (act, w), g in per_seed.groupby(["activation", "warmup_steps"])])
    return per_seed, summary


def preln_table(df: pd.DataFrame) -> pd.DataFrame:
    """Final training loss per (norm, warmup, LR): median and range over the seeds whose loss is a number
    (a NaN one is left out, so `seeds` can fall below the runs'; an inf one is the max)."""
    sub = df[df.part == "preln"]
    if sub.empty:
        return pd.DataFrame()
    return (sub.groupby(["norm", "warmup_steps", "target_lr"]).final_train_loss
            .agg(median="median", min="min", max="max", seeds="count").reset_index())


# -- figures -----------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish_sharpness_figure(plt: Any, fig: Any, ax: Any, bx: Any, path: Path) -> None:
    """The sharpness panel's legend and the loss panel's axes (log: the loss spans decades), then save."""
    ax.legend(fontsize=8)
    bx.set(xlabel="step", ylabel="training loss (MSE)", yscale="log", title="loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sharpening(df: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(df[df.part == "sharpening"].sort_values("seed").itertuples()):
        ax.plot(r.sharp_steps, [x * r.target_lr / 2 for x in r.sharpness], color=f"C{i}",
                label=f"seed {r.seed} (c = {r.c:g})")
        bx.plot([x if math.isfinite(x) else np.nan for x in r.losses], color=f"C{i}", lw=1)
    ax.axhline(1.0, color="k", lw=1, label="2/eta (the edge)")
    ax.axhline(SHARPENING_REACHED, color="k", ls="--", lw=1, label=f"{SHARPENING_REACHED} of 2/eta")
    ax.axhline(SHARPENING_START, color="k", ls=":", lw=1, label=f"{SHARPENING_START} of 2/eta")
    ax.set(xlabel="step", ylabel="sharpness / (2/eta)", title="progressive sharpening, full-batch GD")
    _finish_sharpness_figure(plt, fig, ax, bx, path)


def plot_eos(df: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(df[df.part == "eos"].sort_values("c").itertuples()):
        color = f"C{i}"
        ax.plot(r.sharp_steps, r.sharpness, color=color, label=f"c = {r.c:g} (eta = {r.target_lr:.3g})")
        ax.axhline(2 / r.target_lr, color=color, ls="--", lw=1)
        bx.plot([x if math.isfinite(x) else np.nan for x in r.losses], color=color, lw=1)
    ax.set(xlabel="step", ylabel="sharpness (top Hessian eigenvalue)", title="sharpness; dashed: 2/eta")
    _finish_sharpness_figure(plt, fig, ax, bx, path)


DIVERGED_AT = 1e3  # where a diverged run is drawn on the rise-ratio axis (its ratio is huge or not finite)
ACT_SHIFT, SEED_SHIFT = 0.1, 0.035  # horizontal offsets, in log2(c), per activation and per seed


def catapult_x(tab: pd.DataFrame) -> np.ndarray:
    """Where each row of the catapult table is drawn: c moved by a small factor per activation and per seed
    (2^(k x ACT_SHIFT), 2^(j x SEED_SHIFT), centred), so no two runs of one c fall on one another; the grid's
    steps are 2^(1/4), wider than the spread."""
    acts = {a: k - (tab.activation.nunique() - 1) / 2 for k, a in enumerate(sorted(tab.activation.unique()))}
    seeds = {s: k - (tab.seed.nunique() - 1) / 2 for k, s in enumerate(sorted(tab.seed.unique()))}
    shift = [acts[a] * ACT_SHIFT + seeds[s] * SEED_SHIFT for a, s in zip(tab.activation, tab.seed)]
    return tab.c.to_numpy(dtype=float) * np.exp2(shift)


def plot_catapult(tab: pd.DataFrame, steps: int, path: Path):
    """Every seed's runs: the first seed solid, the others faint, each activation and seed a little apart
    (catapult_x), diverged runs in a band at the top; one legend below both panels. Returns the (closed)
    figure."""
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    from warmup_lab.figstyle import DPI, number

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.9))
    markers = {LAZY: "o", CATAPULT: "^", DIVERGED: "x"}
    first = tab.seed.min()
    tab = tab.assign(x=catapult_x(tab), rise=tab.rise_ratio.where(tab.phase != DIVERGED, DIVERGED_AT)
                     .clip(upper=DIVERGED_AT))
    acts = sorted(tab.activation.unique())
    for i, act in enumerate(acts):
        g = tab[tab.activation == act]
        for ph, m in markers.items():
            for solid in (False, True):
                sel = g[(g.phase == ph) & ((g.seed == first) == solid)]
                kw = {"marker": m, "color": f"C{i}", "alpha": 1.0 if solid else 0.3, "s": 20, "clip_on": False,
                      "zorder": 3 if solid else 2}
                axes[0].scatter(sel.x, sel.rise, **kw)
                ok = sel[(sel.phase != DIVERGED) & np.isfinite(sel.end_sharpness_ratio)]
                axes[1].scatter(ok.x, ok.end_sharpness_ratio, **kw)
    lo, hi = float(tab.c.min()), float(tab.c.max())
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo * 2 ** -0.35, hi * 2 ** 0.35)
        ax.xaxis.set_major_locator(ticker.LogLocator(base=2, numticks=12))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: number(v)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        for c in (2, 4):
            ax.axvline(c, color="grey", ls=":", lw=1)
        ax.set_xlabel("c = eta * lambda0 (runs of one c set a little apart)")
        ax.grid(alpha=0.25)
    axes[0].axhline(CATAPULT_RISE, color="grey", lw=0.8)
    axes[0].axhspan(DIVERGED_AT / 3, DIVERGED_AT * 3, color="0.93", zorder=0)
    axes[0].set(yscale="log", ylim=(0.7, DIVERGED_AT * 3), ylabel="max loss / best loss so far",
                title="phase per c")
    axes[0].text(lo * 2 ** -0.3, DIVERGED_AT * 1.6, "diverged (drawn at 10^3)", fontsize=7, va="center", color="0.3")
    axes[0].yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: number(v)))
    axes[1].axhline(1.0, color="k", ls="--", lw=1)
    axes[1].margins(y=0.08)
    axes[1].set(ylabel="end sharpness / (2/eta)", title=f"sharpness at step {steps} against 2/eta")
    handles = ([Line2D([], [], ls="", marker="s", color=f"C{i}", label=act) for i, act in enumerate(acts)]
               + [Line2D([], [], ls="", marker=m, color="0.3", label=ph) for ph, m in markers.items()]
               + [Line2D([], [], ls="", marker="o", color="0.3", label=f"seed {first}"),
                  Line2D([], [], ls="", marker="o", color="0.3", alpha=0.3, label="other seeds"),
                  Line2D([], [], color="grey", ls=":", lw=1, label="c = 2 and c = 4"),
                  Line2D([], [], color="grey", lw=0.8, label=f"rise {CATAPULT_RISE} (catapult threshold)"),
                  Line2D([], [], color="k", ls="--", lw=1, label="sharpness = 2/eta")])
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return fig


def plot_warmup(per_seed: pd.DataFrame, summary: pd.DataFrame, steps: int, grid_top: float, path: Path) -> None:
    """The median with min-max bars, and each censored seed at its bound (^ trained up to the top, v
    nothing trained), so a bar that ends at the grid's edge is not read as a measurement."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    lengths = sorted(summary.warmup_steps.unique())
    pos = {w: k for k, w in enumerate(lengths)}
    rank = {s: k for k, s in enumerate(sorted(per_seed.seed.unique()))}
    for i, (act, g) in enumerate(summary.groupby("activation")):
        med, lo, hi = (g[k].to_numpy(dtype=float) for k in ("median", "min", "max"))
        ax.errorbar([pos[w] + 0.1 * i for w in g.warmup_steps], med, yerr=[med - lo, hi - med], marker="o",
                    capsize=3, color=f"C{i}", label=f"{act}: median over seeds, bars: range")
        for mark, which, col, text in (("^", "above", "largest_trainable_c", ">= top"),
                                       ("v", "below", "first_untrainable_c", "< bottom")):
            sel = per_seed[(per_seed.activation == act) & (per_seed.censored == which)]
            if len(sel):
                ax.scatter([pos[w] + 0.1 * i + 0.03 * (rank[s] + 1) for w, s in zip(sel.warmup_steps, sel.seed)],
                           sel[col], marker=mark, s=40, facecolors="none", edgecolors=f"C{i}",
                           label=f"{act}: a censored seed ({text})")
    ax.set_xticks(range(len(lengths)), [str(int(w)) for w in lengths])
    ax.axhline(grid_top, color="grey", ls=":", lw=1)
    ax.set(xlabel=f"linear warmup steps (of {steps})", ylabel="largest trainable c = eta * lambda0",
           title="median over seeds, bars: range (min-max)\ncensored seeds at their bound; dotted: top of the grid")
    ax.set_yscale("log", base=2)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lr_label(x: float) -> str:
    """An LR in the fewest characters: 1e-3, 4e-3, 2.5e-4."""
    mantissa, exponent = f"{x:.3e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def plot_preln(tab: pd.DataFrame, grads: pd.DataFrame, path: Path):
    """Returns the (closed) figure, whose axes a test can read."""
    from matplotlib.ticker import NullFormatter

    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for i, ((norm, w), g) in enumerate(tab.groupby(["norm", "warmup_steps"])):
        g = g[np.isfinite(g[["median", "min", "max"]]).all(axis=1)]  # a non-finite loss has no place on the axis
        ax.errorbar(g.target_lr, g["median"], yerr=[g["median"] - g["min"], g["max"] - g["median"]], marker="o",
                    capsize=3, color=f"C{i}", label=f"{norm}-LN, warmup {w}")
    ax.axhline(math.log(16), color="grey", ls=":", lw=1)
    finite = tab[np.isfinite(tab[["median", "min", "max"]]).all(axis=1)] if len(tab) else tab
    ax.set(xscale="log" if len(finite) else "linear", xlabel="Adam LR", ylabel="final training loss",
           yscale="log" if len(finite) else "linear",
           title="median over seeds, bars: range (min-max)\ndotted: uniform guess; non-finite losses left out")
    if len(finite):  # ticks at the LRs run only: matplotlib's minor labels at 3e-3 and 4e-3 overlap
        lrs = sorted(set(tab.target_lr))
        ax.set_xticks(lrs, [lr_label(x) for x in lrs])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8)
    med = grads.groupby(["norm", "depth", "layer"]).grad_norm.median().reset_index()
    for (norm, depth), g in med.groupby(["norm", "depth"]):
        bx.plot(g.layer, g.grad_norm, marker="o", ls="-" if norm == "post" else "--", label=f"{norm}-LN, {depth} layers")
    bx.set(xlabel="layer", ylabel="||grad of FFN output weight|| at init",
           title="gradient norm per layer at init, median over seeds")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


# -- report ------------------------------------------------------------------------------------
def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".3g") if not df.empty else "(no runs)"


def shown(value: float, bound: float, censored: str) -> str:
    """A seed's largest trainable c as text: ">= top" when censored above, "< bottom" when nothing
    trained, so a bound never reads as a measured value."""
    return bound_text(bound if censored == "below" else value, censored)


def spread_text(row: pd.Series) -> str:
    """`median [min, max]` with censored values marked (`over_seeds` columns)."""
    return " ".join([bound_text(row["median"], row["median_censored"]),
                     f"[{bound_text(row['min'], row['min_censored'])}, {bound_text(row['max'], row['max_censored'])}]"])


def _summary_md(summary: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame([{**{k: r[k] for k in keys}, "median [min, max]": spread_text(r), "seeds": r["n_seeds"],
                          "censored": r["n_censored_below"] + r["n_censored_above"]} for _, r in summary.iterrows()])


def warmup_md(per_seed: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The warmup table as report.md shows it: each seed's value (in seed order), then the summary."""
    cells = {k: ", ".join(shown(r.largest_trainable_c, r.first_untrainable_c, r.censored)
                          + ("*" if r.non_monotone else "") for r in g.sort_values("seed").itertuples())
             for k, g in per_seed.groupby(["activation", "warmup_steps"])}
    table = _summary_md(summary, ["activation", "warmup_steps"])
    table.insert(2, "per seed", [cells[(a, w)] for a, w in zip(table.activation, table.warmup_steps)])
    return table


def build_report(root: Path | str, out: Path | str, df: pd.DataFrame | None = None) -> Path:
    """Every table (CSV), figure (PNG) and report.md of the mechanisms experiments under `out`; `df`: the
    runs of `root` when the caller has already read them (`load_runs`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = load_runs(root) if df is None else df
    archive = df.attrs.get("archive")
    if not df.empty and not (archive and Path(archive).parent.resolve() == out.resolve()):
        df.assign(run_dir=[Path(d).name for d in df.run_dir]).to_parquet(out / RUNS_ARCHIVE, index=False)
    source = (f"the committed `{archive}` (the runs were made by `make sweep EXPERIMENT=mechanisms` in "
              "`sweeps/mechanisms`)" if archive else f"`{root}`")
    lines = ["# mechanisms: the harness against published predictions", "",
             f"Runs read from {source}: {len(df)} finished. Definitions: `src/warmup_lab/mechanisms.py`. "
             "Over seeds: the median and the range (min, max), never a mean.", ""]
    if df.empty:
        lines.append("(no finished mechanisms runs)")
    sharpness_parts = {  # part: (table, figure, title, what the table says)
        "eos": (eos_table, plot_eos, "Edge of stability (Cohen et al. 2021)",
                f"Late-phase ratio = sharpness / (2/eta) over the last {LATE_FRACTION:.0%} of the measurements "
                "(mean, min, max); one deterministic GD run per c (seed 0). Prediction: about 1, at or just above."),
        "sharpening": (sharpening_table, plot_sharpening, "Progressive sharpening (Cohen et al. 2021)",
                       f"Full-batch GD at c <= 1.5 (2/eta above the starting sharpness): the ratio sharpness / (2/eta) "
                       f"should rise by itself from <= {SHARPENING_START} to >= {SHARPENING_REACHED} and stay "
                       f"there (`reproduced`: start <= {SHARPENING_START}, reaches {SHARPENING_REACHED}, never "
                       f"below it after; late = the last {LATE_FRACTION:.0%} of the measurements). Digits "
                       "standardised per pixel with half the training labels random "
                       "(experiments/mechanisms/progressive_sharpening)."),
    }
    for part, (table, figure, title, text) in sharpness_parts.items():
        if not df.empty and (df.part == part).any():
            tab = table(df)
            tab.to_csv(out / f"{part}.csv", index=False)
            figure(df, out / f"{part}.png")
            lines += [f"## {title}", "", text, "", _md(tab), "", f"![{part}]({part}.png)", ""]
    if not df.empty and (df.part == "catapult").any():
        cat = catapult_table(df)
        cat.to_csv(out / "catapult.csv", index=False)
        per_seed, summary = catapult_boundaries(cat)
        per_seed.to_csv(out / "catapult_boundaries.csv", index=False)
        summary.to_csv(out / "catapult_boundaries_summary.csv", index=False)
        steps = int(df[df.part == "catapult"].steps.max())
        plot_catapult(cat, steps, out / "catapult.png")
        seeds = ", ".join(str(s) for s in sorted(cat.seed.unique()))
        lines += ["## Catapult phases (Lewkowycz et al. 2020)", "",
                  f"Phase per c = eta * lambda0 (seeds {seeds}, T = {steps}): diverged = status not completed; "
                  f"catapult = completed and the loss rose above {CATAPULT_RISE} x its best so far; lazy = otherwise. "
                  "`detector_catapults`: the harness's catapult detector on the same run. "
                  "Prediction: lazy below c = 2, catapult from 2 to c_max (4 for their two-layer model, more for ReLU), "
                  "diverged above; after a catapult the sharpness ends below 2/eta (end_sharpness_ratio < 1).", "",
                  "Boundaries on the grid per seed (the seed sets the init, hence lambda0): the true one lies between "
                  "`last_lazy` and `first_catapult`, and between `last_trainable` and `first_diverged` "
                  "(`stability.eta_max_of`; `>=` where nothing diverged up to the grid's top):", "",
                  _md(per_seed.assign(last_trainable=[shown(v, b, c) for v, b, c in zip(
                      per_seed.last_trainable, per_seed.first_diverged, per_seed.trainable_censored)])
                      .drop(columns="trainable_censored")), "",
                  "Median and range (min, max) over seeds (`catapult_boundaries_summary.csv`; a boundary absent "
                  "from a seed's grid is left out, `seeds` counts the others):", "",
                  _md(_summary_md(summary, ["activation", "boundary"])), "", _md(cat), "",
                  "![catapult](catapult.png)", ""]
    if not df.empty and (df.part == "warmup").any():
        per_seed, summary = warmup_tables(df)
        per_seed.to_csv(out / "warmup_per_seed.csv", index=False)
        summary.to_csv(out / "warmup.csv", index=False)
        warm = df[df.part == "warmup"]
        plot_warmup(per_seed, summary, int(warm.steps.max()), float(warm.c.max()), out / "warmup.png")
        lines += ["## Warmup extends the trainable range (Kalra & Barkeshli 2024)", "",
                  "Largest trainable c per seed by `stability.eta_max_of` (trainable = status completed; the largest "
                  "trainable c below the first untrainable one above the smallest trainable) on the grid c = 2^x, "
                  f"x = 1 .. 8 in halves, per warmup length (T = {int(warm.steps.max())}); its median and range "
                  "(min, max) over seeds. A seed that trained at every c up to the top of the grid "
                  f"({warm.c.max():g}) is censored: `>= {warm.c.max():g}`, a lower bound, and enters the median "
                  f"at that bound; `< {warm.c.min():g}`: nothing trained. `*`: non-monotone (a c below it failed, "
                  "or one above the first failure trained). Prediction: grows with warmup length.", "",
                  _md(warmup_md(per_seed, summary)), "", "![warmup](warmup.png)", ""]
    grads = grad_norm_table()
    grads.to_csv(out / "grad_norms_at_init.csv", index=False)
    spread = ["median", "min", "max"]
    last = grads[grads.layer == grads.depth].groupby(["norm", "depth"]).grad_norm.agg(spread).reset_index()
    first = grads[grads.layer == 1].groupby(["norm", "depth"]).grad_norm.agg(spread).reset_index()
    if not df.empty and (df.part == "preln").any():
        tab = preln_table(df)
        tab.to_csv(out / "pre_vs_post_ln.csv", index=False)
        plot_preln(tab, grads, out / "pre_vs_post_ln.png")
        lines += ["## Pre-LN vs Post-LN (Xiong et al. 2020)", "",
                  "Final training loss (mean of the last 10 steps) per LN placement, warmup length and Adam LR; "
                  "median and range (min, max) over seeds (`seeds`: those whose loss is a number). ln 16 = 2.77 is "
                  "a uniform guess. Prediction: without warmup Post-LN trains badly where Pre-LN trains; with warmup "
                  "both train.", "", _md(tab), "", "![pre_vs_post_ln](pre_vs_post_ln.png)", ""]
    lines += ["## Gradient norm per layer at initialisation (Xiong et al. 2020, Figure 3)", "",
              "The norm of dL/dW for each block's FFN output weight at init (Xavier init, d_model 32, one batch "
              "of 64 of the reverse task, seeds 0-2: median and range; `grad_norms_at_init.csv` has every layer). "
              "Prediction: Post-LN's is larger near the output and does not shrink with depth; Pre-LN's at the last "
              "layer shrinks like 1/sqrt(L).", "", "Last layer:", "", _md(last), "", "First layer:", "", _md(first), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="the runs root of the mechanisms sweep (sweeps/mechanisms)")
    ap.add_argument("--out", default="results/mechanisms")
    ap.add_argument("--experiment", default="mechanisms", help="accepted for warmup_lab.sweep; unused")
    args = ap.parse_args(argv)
    df = load_runs(args.root) if Path(args.root).is_dir() else pd.DataFrame()
    if df.empty:
        raise SystemExit(f"error: no finished mechanisms runs under {args.root!r} (nor a committed {RUNS_ARCHIVE}); "
                         "run `make sweep EXPERIMENT=mechanisms` first; nothing was written")
    print(f"wrote {build_report(args.root, args.out, df)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
