"""The rules that turn advise's probes into a (warmup, peak LR) pick (docs/advise.md), kept apart from
the command so that tests can hold them against synthetic probes.

- The frontier: eta_max per warmup length, median over seeds with its interval, by
  stability.eta_max_per_seed / eta_max_summary under the one criterion (the rule the sweeper and the
  report apply).
- Eligible cells: (warmup length, LR) probed on every seed and stable on every one of them, with a margin
  below that warmup's own eta_max: LR x margin <= the low end of its interval (a low end censored below
  does not count). The final loss at an LR depends on the warmup before it (ResNet/digits, LR 0.2: 0.19
  after 12 warmup steps, 0.23 without), so warmup and LR are picked together, per cell.
- The pick: the eligible cell with the lowest median final training loss over advise's seeds, warmup and
  LR together (ties: the shorter warmup, then the larger LR). Warmup costs no compute, so a longer one
  is kept whenever its median is lower; the earlier rule (the shortest warmup unless a longer one is
  lower on every seed) kept no warmup on the ResNet arm and lost there on fresh seeds (docs/advise.md).
- Too thin: fewer than 2 seeds, no LR stable on every seed, or none with the margin: no pick, a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from warmup_lab import runs, stability

ADVICE_FILE, FIGURE_FILE, TABLE_FILE = "advice.json", "advice.png", "frontier.csv"
KEYS = ["warmup_steps"]


@dataclass
class Plan:
    seeds: list[int]
    warmups: list[int]


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def _bound(value: float, censored: str) -> str:
    return {"below": "< ", "above": ">= ", "undetermined": "? "}.get(censored, "") + _fmt(value)


def eta_text(row: dict[str, Any]) -> str:
    """'1.6 [0.8, 1.6]' with censoring marks."""
    return (f"{_bound(row['estimate'], row['estimate_censored'])} [{_bound(row['ci_low'], row['ci_low_censored'])}, "
            f"{_bound(row['ci_high'], row['ci_high_censored'])}]")


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else float(v)  # JSON has no NaN


def cells(judged: pd.DataFrame) -> pd.DataFrame:
    """One row per (warmup length, LR): seeds probed, stable, median final train and eval loss, and the
    final train loss and stability of each seed (keys: the seed as text, for JSON)."""
    g = judged.groupby([*KEYS, "lr"], sort=True)
    out = g.agg(n=("stable", "size"), n_stable=("stable", "sum"), median_train_loss=("final_train_loss", "median"),
                median_eval_loss=("final_eval_loss", "median")).reset_index()
    seeds = judged.groupby(KEYS)["seed"].nunique().rename("n_seeds").reset_index()
    out = out.merge(seeds, on=KEYS)
    parts = [part.groupby("seed") for _, part in g]  # in the order of `out`'s rows (both sorted by key)
    out["train_loss_by_seed"] = [{str(int(k)): _finite(v) for k, v in p["final_train_loss"].mean().items()} for p in parts]
    out["stable_by_seed"] = [{str(int(k)): bool(v) for k, v in p["stable"].all().items()} for p in parts]
    out["every_seed_stable"] = (out["n"] == out["n_seeds"]) & (out["n_stable"] == out["n"]) & (out["n_seeds"] >= 2)
    return out


def eligible(table: pd.DataFrame, frontier: list[dict[str, Any]], margin: float) -> pd.DataFrame:
    """The cells stable on every seed whose LR x margin <= the low end of their own warmup's eta_max interval."""
    low = {int(f["warmup_steps"]): f["ci_low"] for f in frontier
           if f["ci_low_censored"] in ("", "above") and f["ci_low"] > 0}
    has_margin = [int(w) in low and lr * margin <= low[int(w)] * (1 + 1e-9)
                  for w, lr in zip(table["warmup_steps"], table["lr"])]
    return table[table["every_seed_stable"] & pd.Series(has_margin, index=table.index, dtype=bool)]


def pick_cell(cands: pd.DataFrame) -> pd.Series | None:
    """The eligible cell of the lowest median final train loss; ties: the shorter warmup, then the larger LR."""
    if cands.empty:
        return None
    return cands.sort_values(["median_train_loss", "warmup_steps", "lr"], ascending=[True, True, False]).iloc[0]


def advise_from(probes: pd.DataFrame, plan: Plan, criterion: str, margin: float, shape: str,
                total_steps: int) -> dict[str, Any]:
    """The frontier, the eligible cells and the pick (or why there is none) from every probe."""
    base = {"criterion": criterion, "criterion_text": stability.criterion(criterion).text, "margin": margin,
            "shape": shape, "total_steps": total_steps, "seeds": plan.seeds, "warmups": plan.warmups,
            "n_probes": len(probes), "frontier": [], "candidates": [], "pick": None}
    if probes.empty:
        base["thin"] = "no probe finished within the budget"
        base["next"] = "raise --budget: not one probe of the search fit in it"
        return {**base, **_answer(None, [], base)}
    judged = stability.judge(probes, [criterion], KEYS)
    per_seed = stability.eta_max_per_seed(judged, KEYS)
    summary = stability.eta_max_summary(per_seed, KEYS)
    frontier = summary.drop(columns="criterion").to_dict("records")
    table = cells(judged)
    cands = eligible(table, frontier, margin).sort_values(["median_train_loss", "warmup_steps", "lr"])
    chosen = pick_cell(cands)
    pick, thin = None, None
    if chosen is not None:
        w = int(chosen["warmup_steps"])
        pick = {"warmup_steps": w, "lr": float(chosen["lr"]),
                "eta_max": next(f for f in frontier if int(f["warmup_steps"]) == w),
                "median_train_loss": float(chosen["median_train_loss"]),
                "median_eval_loss": float(chosen["median_eval_loss"])}
    n_seeds, lo = int(per_seed["seed"].nunique()), float(judged["lr"].min())
    step = None  # what to try next, beside each reason there is no pick
    if n_seeds < 2:
        thin, step = f"{n_seeds} seed: no interval", "run 2 or more seeds (--seeds 3) so eta_max has an interval"
    elif per_seed["censored"].eq("below").all():
        thin = "every seed is censored below: no LR probed was stable under the criterion"
        step = (f"nothing was stable down to LR {lo:.3g}, the lowest probed: raise --budget so the search goes "
                f"lower, or start lower with --no-range-test optimizer.lr={lo / 4:.3g}")
    elif per_seed["censored"].ne("").all():
        thin = "every seed is censored: no search bounded eta_max from both sides"
        step = "raise --budget: each search needs a stable and an unstable LR to bound eta_max"
    elif not table["every_seed_stable"].any():
        thin = "no LR was stable on every seed of any warmup length"
        step = "the seeds disagree at every LR probed: raise --budget so the descent runs lower LRs on every seed"
    elif pick is None:
        thin = f"no LR stable on every seed sits x{margin:.3g} below the low end of its warmup's eta_max interval"
        step = (f"raise --budget for the descent below the edge, or accept LRs closer to it with a smaller "
                f"--margin (now {margin:.3g}; 1 allows the interval's low end itself)")
    pick = None if thin else pick
    notes = _notes(frontier, probes)
    advice = {**base, "frontier": frontier, "candidates": cands.to_dict("records"), "cells": table.to_dict("records"),
              "per_seed": per_seed.to_dict("records"), "pick": pick, "thin": thin, "notes": notes,
              "next": step and step + _slow_text(judged)}
    return {**advice, **_answer(pick, frontier, advice)}


def _slow_text(judged: pd.DataFrame) -> str:
    """The note a too-thin answer's next step gets when runs missed the criterion from learning too little."""
    slow = _too_slow(judged)
    return "" if slow is None else (
        f"; runs at LR {slow:.3g} did not diverge but stayed above the criterion's learning bar, below an LR that "
        "passed it or at the lowest probed: in T steps a lower LR learns less, so rather try a longer "
        "train.steps, a larger optimizer.lr to start from, or --criterion plain")


def _too_slow(judged: pd.DataFrame) -> float | None:
    """The largest LR of a run that trained without diverging (status completed) yet missed the criterion,
    at or below the lowest LR the criterion accepted for its warmup length (or the lowest probed): there the
    criterion fails from too little learning, not from instability, and a lower LR will not pass it."""
    found = []
    for _, g in judged.groupby(KEYS):
        top = g.loc[g["stable"], "lr"].min() if g["stable"].any() else g["lr"].min()
        slow = g[~g["stable"] & g["status"].eq(runs.COMPLETED) & (g["lr"] <= top * (1 + 1e-9))]
        found += slow["lr"].tolist()
    return max(found) if found else None


def _notes(frontier: list[dict[str, Any]], probes: pd.DataFrame) -> list[str]:
    notes = []
    none = next((f for f in frontier if f["warmup_steps"] == 0), None)
    others = [f for f in frontier if f["warmup_steps"] != 0]
    if none is not None and others and all(not (f["ci_low"] > none["ci_high"]) for f in others):
        notes.append("warmup's effect on eta_max is not resolved here: every warmup's interval reaches down to "
                     "no warmup's")
    if probes["core_s"].notna().any():
        notes.append(f"mean probe cost {probes['core_s'].mean():.3g} core-s (one full training run at this config)")
    return notes


def _answer(pick: dict[str, Any] | None, frontier: list[dict[str, Any]], advice: dict[str, Any]) -> dict[str, Any]:
    none = next((f for f in frontier if f["warmup_steps"] == 0), None)
    tail = f"; without warmup eta_max {eta_text(none)}" if none is not None else ""
    n = len(advice["seeds"])
    if pick is None:
        return {"answer": f"advice: none, the evidence is too thin ({advice.get('thin')}){tail}"}
    w = pick["warmup_steps"]
    head = f"{advice['shape']} warmup {w} steps" if w else "no warmup"
    there = "there " if w else ""
    return {"answer": f"advice: {head}, peak LR {_fmt(pick['lr'])} (eta_max {there}{eta_text(pick['eta_max'])}, "
                      f"{pick['eta_max']['n_seeds']} of {n} seeds){tail if w else ''}"}


def frontier_lines(advice: dict[str, Any]) -> list[str]:
    lines = [f"{'warmup':>7} {'eta_max [interval]':>28} {'seeds':>5} {'censored':>9} {'probes':>6}"]
    for f in advice["frontier"]:
        mark = "  <- pick" if advice["pick"] and advice["pick"]["warmup_steps"] == f["warmup_steps"] else ""
        lines.append(f"{f['warmup_steps']:>7} {eta_text(f):>28} {f['n_seeds']:>5} "
                     f"{f['n_censored_below'] + f['n_censored_above']:>9} {f['n_probes']:>6}{mark}")
    return lines


def _coverage_text(frontier: list[dict[str, Any]]) -> str:
    """The intervals' exact coverage (below the nominal level with few seeds: 75% at 3), per seed count."""
    cov = sorted({(int(f["n_seeds"]), float(f["ci_coverage"])) for f in frontier
                  if not math.isnan(float(f.get("ci_coverage", math.nan)))})
    return "".join(f"{'; ' if i else ', '}coverage {c:.0%} at {n} seeds" for i, (n, c) in enumerate(cov))


def answer_lines(advice: dict[str, Any]) -> list[str]:
    """The console answer: the advice first, then the criterion, the frontier, the spend and notes."""
    spent = advice.get("spent") or {}
    lines = [advice["answer"], *([f"next: {advice['next']}"] if advice.get("next") else []),
             advice.get("criterion_line", f"criterion: {advice['criterion_text']}"),
             f"rules (docs/advise.md): among (warmup, LR) cells stable on every seed with LR x {advice['margin']:.3g} <= "
             f"the low end of that warmup's eta_max interval, the lowest median final train loss (ties: the shorter "
             f"warmup, then the larger LR)",
             f"frontier (eta_max per warmup length, median over seeds, {stability.INTERVAL_TEXT} interval"
             f"{_coverage_text(advice['frontier'])}):",
             *frontier_lines(advice)]
    if advice["pick"]:
        p = advice["pick"]
        lines.append(f"pick: median final train loss {_fmt(p['median_train_loss'])}, eval loss "
                     f"{_fmt(p['median_eval_loss'])} over advise's seeds at warmup {p['warmup_steps']}, LR {_fmt(p['lr'])}")
    lines.append(f"spent: {spent.get('probes', 0)} runs"
                 + (f" of {spent['max_probes']}" if spent.get("max_probes") else "")
                 + f", {spent.get('core_s', 0):.0f} core-s"
                 + (f" of {spent['max_core_s']:.0f}" if spent.get("max_core_s") else "")
                 + f" (budget {advice.get('budget') or 'none'}): "
                 + (f"the range test 1 run, {spent.get('range_test_core_s', 0):.0f} core-s; " if spent.get("range_test_runs")
                    else "")
                 + f"the search {spent.get('probes', 0) - spent.get('range_test_runs', 0) - spent.get('confirmation_runs', 0)}"
                 + f" runs; the descent {spent.get('confirmation_runs', 0)} runs")
    rt = advice.get("range_test")
    if rt:
        edge = (f"loss blew up at LR {_fmt(rt['edge_lr'])}" if rt.get("blew_up")
                else f"loss did not blow up up to the ramp's top, LR {_fmt(rt['edge_lr'])}")
        lines.append(f"range test (seed {rt['seed']}): {edge} (steepest descent {_fmt(rt['steepest_lr'])}); "
                     f"the search started at {_fmt(advice['start_lr'])}")
    lines += [f"note: {n}" for n in advice.get("notes", [])]
    if advice.get("out"):
        lines.append(f"files: {Path(advice['out']) / ADVICE_FILE}, {FIGURE_FILE}, {TABLE_FILE}, advice.md")
    return lines


def markdown(advice: dict[str, Any]) -> str:
    body = "\n".join(answer_lines(advice))
    return f"# Advice\n\n```\n{body}\n```\n\n![eta_max against warmup length]({FIGURE_FILE})\n"


SEED_SPAN = (-0.34, -0.14)  # seeds to the left of each warmup's tick, one column per seed
MEDIAN_SHIFT = 0.14  # the median and its interval to the right; the pick sits on the tick itself


def seed_offsets(seeds: list[int]) -> dict[int, float]:
    """Each seed's horizontal offset from its warmup's tick (the same at every warmup, so a seed's points
    line up and no two seeds' points fall on one another)."""
    seeds = sorted(seeds)
    lo, hi = SEED_SPAN
    step = (hi - lo) / max(len(seeds) - 1, 1)
    return {s: (lo + k * step if len(seeds) > 1 else (lo + hi) / 2) for k, s in enumerate(seeds)}


def _nudge(fig: Any, dx_pt: float, dy_pt: float) -> Any:
    """A shift of `dx_pt`, `dy_pt` points, to put a bound's arrow beside its marker at any axis scale."""
    from matplotlib.transforms import ScaledTranslation

    return ScaledTranslation(dx_pt / 72, dy_pt / 72, fig.dpi_scale_trans)


def figure(advice: dict[str, Any], path: Path):
    """eta_max against warmup length: each seed (grey, one column per seed; arrows where censored), the median
    with its interval beside it, and the pick (a red star exactly on its warmup's tick and its peak LR).
    Everything comes from `advice`, so advice.json alone redraws it. Returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from warmup_lab.figstyle import DPI, log_axis, wrap

    fig, ax = plt.subplots(figsize=(6.8, 5.0))
    ws = sorted({int(f["warmup_steps"]) for f in advice["frontier"]})
    pos = {w: i for i, w in enumerate(ws)}
    per_seed = advice.get("per_seed", [])
    shift = seed_offsets(sorted({int(r["seed"]) for r in per_seed}))
    for r in per_seed:
        x = pos[int(r["warmup_steps"])] + shift[int(r["seed"])]
        y, marker = ((r["hi"], "v") if r["censored"] == "below" else (r["eta_max"], "^" if r["censored"] else "o"))
        ax.plot(x, y, marker, color="0.55", ms=5, zorder=2, clip_on=False)
    for f in advice["frontier"]:
        x, est = pos[int(f["warmup_steps"])] + MEDIAN_SHIFT, f["estimate"]
        if not math.isnan(f["ci_low"]) and not math.isnan(f["ci_high"]):
            ax.vlines(x, f["ci_low"], f["ci_high"], color="black", lw=2, zorder=3)
        if not math.isnan(est):  # a median that is itself a bound is drawn hollow, with its arrow
            bound = {"below": "v", "above": "^"}.get(f.get("estimate_censored") or "")
            ax.plot(x, est, "s", color="black", mfc="white" if bound else "black", ms=6, zorder=4, clip_on=False)
            if bound:
                ax.plot(x, est, bound, color="black", ms=5, zorder=4, clip_on=False,
                        transform=ax.transData + _nudge(fig, 0, -9 if bound == "v" else 9))
    ax.plot([], [], "o", color="0.55", label="eta_max of one seed (a column per seed; v/^: censored)")
    ax.plot([], [], "s", color="black", label=f"median over seeds, {stability.INTERVAL_TEXT} interval")
    if any(f.get("estimate_censored") for f in advice["frontier"]):
        ax.plot([], [], "s", color="black", mfc="white", label="median that is a bound (v: eta_max below it, ^: above)")
    if advice["pick"]:
        p = advice["pick"]
        ax.plot(pos[p["warmup_steps"]], p["lr"], "*", color="tab:red", mec="darkred", ms=15, zorder=5,
                clip_on=False, label=f"recommended: warmup {p['warmup_steps']} steps, peak LR {_fmt(p['lr'])}")
    ax.set_xlim(-0.6, len(ws) - 0.4)
    ax.margins(y=0.08)
    log_axis(ax, "y")
    ax.set_xticks(range(len(ws)), [str(w) for w in ws])
    ax.set_xlabel(f"{advice['shape']} warmup length (steps of T={advice['total_steps']})")
    ax.set_ylabel("peak LR (eta_max: the largest stable one)")
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.set_title(wrap(advice["answer"], 80), fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return fig
