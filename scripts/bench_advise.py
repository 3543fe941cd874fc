"""Is advise's answer better than the LR range test's? Measured on fresh seeds (experiments/advise/README.md).

Per arm: lr-find (Lightning's steepest-descent suggestion, seed 0), advise at each budget (its own
seeds 0, 1, ...), then full training runs over fresh seeds that neither used: lr-find's LR without warmup
and with linear warmup over 10% of T, and advise's (warmup, peak LR) at each budget. Every number of the
table comes from the runs' summaries; the table (bench.csv, bench.md) and the figures go to --out.

    nice -n 5 python scripts/bench_advise.py --out results/advise --runs-root sweeps/bench_advise
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from warmup_lab import runs, stability
from warmup_lab.advice import figure as advice_figure
from warmup_lab.advise import _threads
from warmup_lab.lr_find import compose_train, lr_find, sets_ramp
from warmup_lab.summary import json_safe
from warmup_lab.job import train

ARMS = {
    "resnet_sgd": ["+arm=resnet_sgd"],
    "transformer_adamw": ["+arm=transformer_adamw"],
}
# Seeds neither method saw. 100-104 judged advise's earlier pick rule (the shortest warmup unless a longer one
# was lower on every seed); after that rule was replaced, 200-204 judge the current one (git history).
FRESH_SEEDS = (200, 201, 202, 203, 204)


def range_test(overrides: list[str]) -> dict[str, Any]:
    """lr-find on the arm, seed 0; the range test sets its own steps and LRs (100 steps, its ramp)."""
    return lr_find([*(o for o in overrides if not sets_ramp(o)), "seed=0"])


def redraw(out: Path, arms: dict[str, list[str]]) -> None:
    """The figures of a committed benchmark, from its files and one range-test run per arm (bit-exact on one
    machine: a suggestion other than the committed one stops here, the old figure kept)."""
    table = pd.read_csv(out / "bench.csv", float_precision="round_trip")
    for arm, overrides in arms.items():
        for path in sorted((out / arm).glob("advise_*/advice.json")):
            advice_figure(json.loads(path.read_text()), path.parent / "advice.png")
            print(f"redrew {path.parent / 'advice.png'}", flush=True)
        found = range_test(overrides)
        committed = table[(table["arm"] == arm) & table["method"].str.startswith("lr-find")]["lr"]
        if committed.empty or not (committed == found["steepest"]["lr"]).all():
            raise SystemExit(f"{arm}: the range test now suggests {found['steepest']['lr']!r}, bench.csv holds "
                             f"{sorted(set(committed))}; {out / arm / 'lr_find.png'} left as it was")
        shutil.copy(Path(found["run_dir"]) / "lr_find.png", out / arm / "lr_find.png")
        print(f"redrew {out / arm / 'lr_find.png'} (suggestion {found['steepest']['lr']:.4g}, as committed)", flush=True)


def full_run(overrides: list[str], lr: float, warmup: int, seed: int) -> dict[str, Any]:
    """One full training run at (lr, warmup) of the arm; its summary, judged under the default criterion."""
    cfg = compose_train([*overrides, f"optimizer.lr={lr!r}", "schedule.warmup=linear",
                         f"schedule.warmup_steps={warmup}", "schedule.warmup_ratio=null", f"seed={seed}"])
    s = train(cfg, runs.run_dir_for(cfg))
    row = pd.DataFrame([{"status": s["status"], "init_loss": s["init_loss"], "final_train_loss": s["final_train_loss"],
                         "final_eval_loss": s.get("final_eval_loss"), "baseline_loss": stability.baseline_of(s)}])
    learned = bool(stability.judge(row, [stability.DEFAULT_CRITERION], keys=[])["stable"].iloc[0])
    return {"seed": seed, "status": s["status"], "final_train_loss": s["final_train_loss"],
            "final_eval_loss": s.get("final_eval_loss", math.nan), "learned": learned,
            "core_s": float(s["wall_s"]) * _threads(cfg)}


def full_runs(overrides: list[str], cells: list[tuple[float, int]], seeds: tuple[int, ...],
              jobs: int) -> dict[tuple[float, int, int], dict[str, Any]]:
    """Every (lr, warmup) cell on every seed (`full_run`), `jobs` side by side (each run sets its own threads);
    keyed by (lr, warmup, seed)."""
    keys = [(lr, w, seed) for lr, w in dict.fromkeys(cells) for seed in seeds]
    if not keys:
        return {}
    with ProcessPoolExecutor(jobs) as pool:
        return dict(zip(keys, pool.map(full_run, *zip(*[(overrides, lr, w, seed) for lr, w, seed in keys]))))


def seed_range(text: str) -> tuple[int, ...]:
    """'300-319' -> (300, ..., 319); '300' -> (300,)."""
    lo, _, hi = text.partition("-")
    return tuple(range(int(lo), int(hi or lo) + 1))


def run_advise(overrides: list[str], budget: str, out: Path, launcher: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "warmup_lab.advise", *overrides, *launcher, "--budget", budget, "--out", str(out)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"advise failed ({done.returncode}): {' '.join(cmd)}")
    advice = json.loads((out / "advice.json").read_text())
    advice["first_line"] = done.stdout.splitlines()[0]
    return advice


def method_row(arm: str, method: str, lr: float | None, warmup: int | None, results: list[dict[str, Any]],
               cost: float | None) -> dict[str, Any]:
    ok = results
    med = lambda k: statistics.median(r[k] for r in ok) if ok else math.nan  # noqa: E731
    return {"arm": arm, "method": method, "lr": lr, "warmup_steps": warmup, "n_seeds": len(ok),
            "median_final_train_loss": med("final_train_loss"), "median_final_eval_loss": med("final_eval_loss"),
            "frac_diverged_or_failed": (sum(r["status"] != runs.COMPLETED for r in ok) / len(ok)) if ok else math.nan,
            "frac_not_learned": (sum(not r["learned"] for r in ok) / len(ok)) if ok else math.nan,
            "cost_core_s": cost}


def bench_arm(arm: str, overrides: list[str], budgets: list[str], out: Path, launcher: list[str],
              jobs: int, fresh: tuple[int, ...]) -> tuple[list[dict], list[dict]]:
    t = time.time()
    found = range_test(overrides)
    cfg = compose_train(overrides)
    tw = int(math.floor(0.1 * int(cfg.train.steps)))
    (out / arm).mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(found["run_dir"]) / "lr_find.png", out / arm / "lr_find.png")
    suggestion = found["steepest"]["lr"]
    lf_cost = float(found["wall_s"]) * _threads(cfg)
    print(f"[{arm}] lr-find {suggestion:.4g} ({time.time() - t:.0f} s)", flush=True)
    methods = [("lr-find, no warmup", suggestion, 0, lf_cost, 1),
               (f"lr-find, linear warmup {tw} (10% of T)", suggestion, tw, lf_cost, 1)]
    advices = []
    for budget in budgets:
        advice = run_advise(overrides, budget, out / arm / f"advise_{budget}", launcher)
        advices.append({"arm": arm, "budget": budget, "answer": advice["first_line"], "spent": advice["spent"],
                        "thin": advice["thin"]})
        print(f"[{arm}] {advice['first_line']} ({time.time() - t:.0f} s)", flush=True)
        pick = advice["pick"]
        methods.append((f"advise {budget}", pick["lr"] if pick else None, pick["warmup_steps"] if pick else None,
                        advice["spent"]["core_s"], advice["spent"]["probes"]))
    done = full_runs(overrides, [(lr, w) for _, lr, w, _, _ in methods if lr is not None], fresh, jobs)
    rows = []
    for name, lr, w, cost, n_runs in methods:
        results = [done[(lr, w, s)] for s in fresh] if lr is not None else []
        rows.append({**method_row(arm, name, lr, w, results, cost), "cost_runs": n_runs, "_runs": results})
    run_cost = statistics.median(r["core_s"] for row in rows for r in row["_runs"])
    for row in rows:
        row["cost_x_run"] = row["cost_core_s"] / run_cost if row["cost_core_s"] is not None else math.nan
        row["core_s_per_full_run"] = run_cost
    print(f"[{arm}] done ({time.time() - t:.0f} s)", flush=True)
    return rows, advices


def final_losses(results: list[dict[str, Any]]) -> np.ndarray:
    """Each run's final train loss, a diverged or non-finite run as +inf: above every loss, never a guess."""
    return np.array([r["final_train_loss"] if r["status"] != runs.DIVERGED and math.isfinite(r["final_train_loss"])
                     else math.inf for r in results], dtype=float)


def paired_loss_ratio(base: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """final train loss of `other` / of `base`, paired by seed: `stability.ratio` (Hodges-Lehmann, exact
    interval, exact two-sided signed-rank p) on the losses, a non-finite or diverged run entering as a lower
    bound at the largest finite loss of the two, as in `stability.final_loss_compare`."""
    def frame(results: list[dict[str, Any]], top: float) -> pd.DataFrame:
        bad = ~np.isfinite(final_losses(results))
        return pd.DataFrame({"seed": [r["seed"] for r in results], "hi": math.nan,
                             "eta_max": [top if b else r["final_train_loss"] for r, b in zip(results, bad)],
                             "censored": ["above" if b else "" for b in bad]})
    finite = [r["final_train_loss"] for r in base + other if math.isfinite(r["final_train_loss"])]
    top = max(finite, default=1.0)
    return stability.ratio(frame(base, top), frame(other, top))


def recheck(out: Path, arms: dict[str, list[str]], seeds: tuple[int, ...], jobs: int) -> pd.DataFrame:
    """Every (lr, warmup) of bench.csv for these arms trained again on `seeds` (fresh: used by no method and
    by no earlier evaluation); per arm, each advise pick against each lr-find row, paired by seed, Holm over
    the arm's comparisons. Written to recheck.csv / recheck_runs.csv / recheck.md beside bench.csv."""
    table = pd.read_csv(out / "bench.csv", float_precision="round_trip")
    rows, per_seed = [], []
    for arm, overrides in arms.items():
        g = table[table["arm"] == arm]
        settings = sorted({(float(r.lr), int(r.warmup_steps)) for r in g.itertuples() if pd.notna(r.lr)})
        done = full_runs(overrides, settings, seeds, jobs)
        results = {m.method: [done[(float(m.lr), int(m.warmup_steps), s)] for s in seeds] for m in g.itertuples()
                   if pd.notna(m.lr)}
        per_seed += [{"arm": arm, "method": m, **r} for m, rs in results.items() for r in rs]
        picks: dict[tuple[float, int], list[str]] = {}  # budgets that picked the same cell: one comparison
        for m in g.itertuples():
            if m.method.startswith("advise") and pd.notna(m.lr):
                picks.setdefault((float(m.lr), int(m.warmup_steps)), []).append(m.method)
        advised = {", ".join([names[0], *(n.removeprefix("advise ") for n in names[1:])]): results[names[0]]
                   for names in picks.values()}
        cmp = []
        for a, mine in advised.items():
            for lf in [m for m in results if m.startswith("lr-find")]:
                r = paired_loss_ratio(results[lf], mine)
                cmp.append({"arm": arm, "advise": a, "lr_find": lf, "n_seeds": r["n_seeds"],
                            "median_loss_advise": statistics.median(x["final_train_loss"] for x in mine),
                            "median_loss_lr_find": statistics.median(x["final_train_loss"] for x in results[lf]),
                            "ratio": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                            "ci_coverage": r["ci_coverage"], "test": r["test"], "p_value": r["p_value"],
                            "advise_lower_on_seeds": sum(x["final_train_loss"] < y["final_train_loss"]
                                                         for x, y in zip(mine, results[lf])),
                            "advise_diverged_or_failed": sum(x["status"] != runs.COMPLETED for x in mine)})
        for c, p in zip(cmp, stability.holm([c["p_value"] for c in cmp])):
            c["p_holm"] = float(p)
        rows += cmp
    rc = pd.DataFrame(rows)
    rc.to_csv(out / "recheck.csv", index=False, lineterminator="\n")
    pd.DataFrame(per_seed).to_csv(out / "recheck_runs.csv", index=False, lineterminator="\n")
    md = ["# advise vs lr-find, re-checked on more fresh seeds (scripts/bench_advise.py --recheck)", "",
          f"Seeds {list(seeds)}: used by neither method's search nor by the first evaluation (200-204). Ratio = "
          "final train loss of advise's pick / of the lr-find row, paired by seed: Hodges-Lehmann estimate, "
          f"{stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval (coverage beside it), exact two-sided "
          "signed-rank p, Holm over the arm's comparisons. Below 1: advise ends lower.", "",
          rc.to_markdown(index=False, floatfmt=".4g"), ""]
    (out / "recheck.md").write_text("\n".join(md))
    print("\n".join(md), flush=True)
    return rc


def ceiling_table(cells: dict[tuple[int, float], list[dict[str, Any]]], base: tuple[int, float],
                  labels: dict[tuple[int, float], str]) -> pd.DataFrame:
    """Every (warmup, lr) cell against the `base` cell (lr-find's LR with its warmup), paired by seed: the loss
    ratio (`paired_loss_ratio`), how many seeds the cell ends lower on, Holm over every cell but the base."""
    rows = []
    for (w, lr), mine in sorted(cells.items()):
        r = paired_loss_ratio(cells[base], mine) if (w, lr) != base else None
        losses = final_losses(mine)
        lo, _, hi, _, _ = stability.median_interval(losses, np.zeros(len(mine), int))
        rows.append({"warmup_steps": w, "lr": lr, "label": labels.get((w, lr), ""), "n_seeds": len(mine),
                     "median_final_train_loss": float(np.median(losses)), "median_ci_low": lo, "median_ci_high": hi,
                     "n_diverged_or_failed": sum(x["status"] != runs.COMPLETED for x in mine),
                     **({k: r[k] for k in ("ratio", "ci_low", "ci_high", "ci_coverage", "test", "p_value")} if r else
                        {"ratio": 1.0, "ci_low": math.nan, "ci_high": math.nan, "ci_coverage": math.nan,
                         "test": "(the baseline)", "p_value": math.nan}),
                     "lower_on_seeds": int((losses < final_losses(cells[base])).sum())})
    out = pd.DataFrame(rows)
    tested = out["test"] != "(the baseline)"
    out["p_holm"] = math.nan
    out.loc[tested, "p_holm"] = stability.holm(out.loc[tested, "p_value"].tolist())
    out["resolved"] = tested & (out["p_holm"] <= stability.ALPHA)
    return out


def ceiling_figure(table: pd.DataFrame, path: Path, title: str) -> None:
    """Median final training loss against peak LR, a line per warmup length; lr-find's cells and advise's
    picks marked (their labels from the table)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from warmup_lab import figstyle

    fig, ax = plt.subplots(figsize=(9.5, 5))
    ws = sorted(table["warmup_steps"].unique())
    shift = {w: 1.025 ** (i - (len(ws) - 1) / 2) for i, w in enumerate(ws)}  # side by side at one LR
    x = table["lr"] * table["warmup_steps"].map(shift)
    for w in ws:
        g = table[table["warmup_steps"] == w].assign(x=x).sort_values("lr")
        y = g["median_final_train_loss"]
        ax.errorbar(g["x"], y, yerr=[y - g["median_ci_low"], g["median_ci_high"] - y], fmt="o-", ms=4, capsize=2,
                    lw=1.2, elinewidth=0.8, alpha=0.9, label=f"warmup {w}")
    marks = {"lr-find": ("s", "black"), "advise": ("*", "red")}
    for kind, (m, c) in marks.items():
        sel = table["label"].str.contains(kind)
        if sel.any():
            ax.scatter(x[sel], table.loc[sel, "median_final_train_loss"], marker=m, s=150 if m == "*" else 80,
                       facecolors="none" if m == "s" else c, edgecolors=c, zorder=5,
                       label=f"{kind}'s " + ("cells" if kind == "lr-find" else "pick"))
    figstyle.log_axis(ax, "x")
    ax.set_xlabel("peak LR (constant after the linear warmup; the warmups drawn side by side at each LR)")
    ax.set_ylabel(f"median final training loss\n(bars: its {stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval)")
    ax.set_title(figstyle.wrap(title, 80), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=figstyle.DPI)
    plt.close(fig)


def ceiling(out: Path, arm: str, overrides: list[str], seeds: tuple[int, ...], lrs: list[float],
            warmups: list[int], jobs: int) -> pd.DataFrame:
    """How much could any pick gain over lr-find on this arm? A grid of (warmup, lr) cells, plus bench.csv's
    rows, trained on `seeds` (fresh), each against lr-find's LR with its 10%-of-T warmup, paired by seed.
    The best cell is chosen on the same seeds, so its ratio is optimistic: an upper bound on what a rule that
    picks among these cells could gain. Written to ceiling.csv / ceiling_runs.csv / ceiling.md / ceiling.png."""
    table = pd.read_csv(out / "bench.csv", float_precision="round_trip")
    used = {*json.loads((out / "bench.json").read_text())["fresh_seeds"], *range(0, 10)}  # advise's and lr-find's
    used |= {s for f in (out / arm).glob("advise_*/advice.json") for s in json.loads(f.read_text())["seeds"]}
    if (out / "recheck_runs.csv").exists():
        used |= set(pd.read_csv(out / "recheck_runs.csv")["seed"])
    if used & set(seeds):
        raise SystemExit(f"--ceiling seeds {sorted(used & set(seeds))} were used before (by advise, lr-find, the "
                         f"benchmark or its re-check); pass fresh ones, e.g. {max(used) + 1}-{max(used) + len(seeds)}")
    g = table[(table["arm"] == arm) & table["lr"].notna()]
    labels: dict[tuple[int, float], str] = {}
    for m in g.itertuples():
        key = (int(m.warmup_steps), float(m.lr))
        labels[key] = ", ".join(filter(None, [labels.get(key, ""), m.method]))
    lf = [k for k, v in labels.items() if v.startswith("lr-find") and k[0] > 0]
    if len(lf) != 1:
        raise SystemExit(f"{arm}: bench.csv has no single lr-find row with warmup ({sorted(labels.values())})")
    keys = sorted({*((w, float(lr)) for w in warmups for lr in lrs), *labels})
    done = full_runs(overrides, [(lr, w) for w, lr in keys], seeds, jobs)
    cells = {(w, lr): [done[(lr, w, s)] for s in seeds] for w, lr in keys}
    ct = ceiling_table(cells, lf[0], labels)
    ct.to_csv(out / "ceiling.csv", index=False, lineterminator="\n")
    pd.DataFrame([{"warmup_steps": w, "lr": lr, **r} for (w, lr), rs in cells.items() for r in rs]).to_csv(
        out / "ceiling_runs.csv", index=False, lineterminator="\n")
    best = ct.loc[ct["median_final_train_loss"].idxmin()]
    lowest = ct.loc[ct["ratio"].idxmin()]
    title = (f"{arm}: median final training loss over {len(seeds)} fresh seeds ({seeds[0]}-{seeds[-1]}); "
             f"lr-find's cell: warmup {lf[0][0]}, LR {lf[0][1]:.3g}")
    ceiling_figure(ct, out / "ceiling.png", title)
    md = [f"# How much could any pick gain over lr-find? (scripts/bench_advise.py --ceiling, arm {arm})", "",
          f"Seeds {list(seeds)}: used by no method, no evaluation and no re-check before (the script refuses "
          "seeds of bench.json, recheck_runs.csv, advise's searches or below 10). Every (warmup, LR) cell "
          f"of the grid (warmups {warmups}, LRs {[float(f'{x:.4g}') for x in lrs]}) and of bench.csv is trained "
          f"in full on every seed and compared with lr-find's cell (warmup {lf[0][0]}, LR {lf[0][1]:.4g}): ratio "
          "= final train loss of the cell / of lr-find's, paired by seed (Hodges-Lehmann, "
          f"{stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval, exact two-sided signed-rank p, Holm "
          "over every cell). The best cell is chosen on these same seeds, so its ratio is an optimistic bound "
          "on what any rule picking among these cells could gain.", "",
          f"Lowest median: warmup {int(best.warmup_steps)}, LR {best.lr:.4g}, {best.median_final_train_loss:.4g}. "
          f"Lowest paired ratio: warmup {int(lowest.warmup_steps)}, LR {lowest.lr:.4g}, x{lowest.ratio:.3g} "
          f"[{lowest.ci_low:.3g}, {lowest.ci_high:.3g}], p_holm {lowest.p_holm:.2g}. Cells resolved below "
          f"lr-find's: {int((ct['resolved'] & (ct['ratio'] < 1)).sum())}; above: "
          f"{int((ct['resolved'] & (ct['ratio'] > 1)).sum())}.", "",
          ct.to_markdown(index=False, floatfmt=".4g"), "", "![ceiling](ceiling.png)", ""]
    (out / "ceiling.md").write_text("\n".join(md))
    print("\n".join(md), flush=True)
    return ct


def wins(rows: pd.DataFrame) -> pd.DataFrame:
    """advise wins on an arm when none of its fresh seeds diverged or failed and its median final train loss is
    below both lr-find rows'."""
    out = []
    for arm, g in rows.groupby("arm", sort=False):
        lf = g[g["method"].str.startswith("lr-find")]
        for _, r in g[g["method"].str.startswith("advise")].iterrows():
            out.append({"arm": arm, "method": r["method"], "no_divergence": r["frac_diverged_or_failed"] == 0,
                        "lower_loss_than_lr_find": bool(r["median_final_train_loss"] < lf["median_final_train_loss"].min()),
                        "wins": bool(r["frac_diverged_or_failed"] == 0 and r["n_seeds"] > 0
                                     and r["median_final_train_loss"] < lf["median_final_train_loss"].min())})
    return pd.DataFrame(out)


def _combine(part: Path, out: Path, table: pd.DataFrame, per_seed: pd.DataFrame, advice: list[dict],
             span: list) -> tuple[pd.DataFrame, pd.DataFrame, list[dict], list]:
    """Add the arms of another invocation's output `part` (its tables, answers, time span and arm folders)."""
    info = json.loads((part / "bench.json").read_text())
    end = (part / "bench.json").stat().st_mtime
    span = [*span, *(info.get("span") or [(end - info["wall_s"], end)])]
    for arm_dir in (d for d in part.iterdir() if d.is_dir()):
        shutil.copytree(arm_dir, out / arm_dir.name, dirs_exist_ok=True)
    return (pd.concat([table, pd.read_csv(part / "bench.csv")], ignore_index=True),
            pd.concat([per_seed, pd.read_csv(part / "bench_runs.csv")], ignore_index=True), advice + info["advice"], span)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/advise")
    p.add_argument("--runs-root", default="sweeps/bench_advise")
    p.add_argument("--budgets", default="36runs,60runs,96runs")
    p.add_argument("--launcher", default="hydra/launcher=joblib2", help="advise's launcher overrides (space-separated)")
    p.add_argument("--jobs", type=int, default=2, help="fresh runs at a time (per arm)")
    p.add_argument("--parallel-arms", action="store_true",
                   help="bench the arms side by side, one process each (on 2 cores: about the same core time, less wall)")
    p.add_argument("--fresh-seeds", default=",".join(map(str, FRESH_SEEDS)),
                   help="seeds of the full runs that judge each method; never ones advise or lr-find used")
    p.add_argument("--arm", action="append", default=[], help="NAME=OVERRIDE[ OVERRIDE...] (adds an arm)")
    p.add_argument("--no-default-arms", action="store_true", help="only the --arm ones")
    p.add_argument("--combine", action="append", default=[],
                   help="another invocation's --out: its arms join this table (figures and advice copied)")
    p.add_argument("--redraw", action="store_true",
                   help="only redraw --out's figures: advice.png from each committed advice.json, lr_find.png by "
                        "re-running each arm's range test (seed 0), which must give the committed suggestion")
    p.add_argument("--recheck", help="FIRST-LAST: only re-train bench.csv's (lr, warmup) rows on these fresh seeds "
                                     "and compare advise with lr-find paired by seed (recheck.csv/.md)")
    p.add_argument("--recheck-arms", help="comma-separated arms for --recheck (default: all)")
    p.add_argument("--ceiling", help="FIRST-LAST: only train a grid of (warmup, LR) cells of --ceiling-arm on these "
                                     "fresh seeds, each against lr-find's cell with warmup (ceiling.csv/.md/.png)")
    p.add_argument("--ceiling-arm", default="resnet_sgd")
    p.add_argument("--ceiling-lrs", default="", help="comma-separated LRs of the grid")
    p.add_argument("--ceiling-warmups", default="0,6,12,24", help="comma-separated warmup lengths (linear) of the grid")
    args = p.parse_args()
    arms = {} if args.no_default_arms else dict(ARMS)
    for spec in args.arm:
        name, _, ovs = spec.partition("=")
        arms[name] = ovs.split()
    out = Path(args.out)
    arms = {a: [*ovs, f"runs_root={args.runs_root}", "logger=none", "train.progress=false"] for a, ovs in arms.items()}
    if args.recheck:
        picked = {a: arms[a] for a in (args.recheck_arms.split(",") if args.recheck_arms else arms)}
        recheck(out, picked, seed_range(args.recheck), args.jobs)
        return
    if args.ceiling:
        ceiling(out, args.ceiling_arm, arms[args.ceiling_arm], seed_range(args.ceiling),
                [float(x) for x in args.ceiling_lrs.split(",") if x], [int(x) for x in args.ceiling_warmups.split(",")],
                args.jobs)
        return
    if args.redraw:
        redraw(out, arms)
        return
    out.mkdir(parents=True, exist_ok=True)
    budgets = args.budgets.split(",")
    began, all_rows, all_advice = time.time(), [], []
    fresh = tuple(int(x) for x in args.fresh_seeds.split(","))
    calls = [(arm, ovs, budgets, out,
              args.launcher.split(), args.jobs, fresh) for arm, ovs in arms.items()]
    if args.parallel_arms and len(calls) > 1:
        with ProcessPoolExecutor(len(calls)) as pool:  # one process per arm: torch's global RNG is per process
            results = list(pool.map(bench_arm, *zip(*calls)))
    else:
        results = [bench_arm(*c) for c in calls]
    for rows, advices in results:
        all_rows += rows
        all_advice += advices
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "_runs"} for r in all_rows])
    per_seed = pd.DataFrame([{"arm": r["arm"], "method": r["method"], **x} for r in all_rows for x in r["_runs"]])
    span = [(began, time.time())] if arms else []
    for part in map(Path, args.combine):  # arms benched by other invocations (run side by side): one table
        table, per_seed, all_advice, span = _combine(part, out, table, per_seed, all_advice, span)
    wall = max(end for _, end in span) - min(start for start, _ in span)
    won = wins(table)
    arms_in = list(table["arm"].unique())  # a budget wins only with a winning row on every arm
    smallest = next((b for b in budgets if sorted(won[(won["method"] == f"advise {b}") & won["wins"]]["arm"])
                     == sorted(arms_in)), None)
    table.to_csv(out / "bench.csv", index=False, lineterminator="\n")
    per_seed.to_csv(out / "bench_runs.csv", index=False, lineterminator="\n")
    won.to_csv(out / "wins.csv", index=False, lineterminator="\n")
    summary = {"budgets": budgets, "fresh_seeds": list(fresh), "smallest_budget_winning_every_arm": smallest,
               "wall_s": wall, "advice": all_advice, "criterion": stability.criterion(stability.DEFAULT_CRITERION).text}
    summary["span"] = span
    (out / "bench.json").write_text(json.dumps(json_safe(summary), indent=1) + "\n")
    md = ["# advise vs the LR range test (generated by scripts/bench_advise.py)", "",
          f"Fresh seeds {list(fresh)}; advise's searches used seeds 0, 1, 2, ...; lr-find used seed 0. "
          f"Criterion for 'not learned': {summary['criterion']}", "",
          table.drop(columns=["core_s_per_full_run"]).to_markdown(index=False, floatfmt=".4g"), "",
          "cost_runs: the runs each method made (lr-find: its one ramp of 100 steps; advise: every run, the "
          "range test included), the unit of `--budget`, whatever the machine's load. cost_core_s: wall_s x "
          "threads of those runs when they ran, cost_x_run: that over the cost of one full training run (a "
          "run resumed from an earlier invocation counts at the cost it had then).", "",
          "Cost of one full training run (median over the fresh runs, core-s): "
          + ", ".join(f"{a} {g['core_s_per_full_run'].iloc[0]:.3g}" for a, g in table.groupby("arm", sort=False)), "",
          "## Does advise win? (no fresh seed diverged or failed, and lower median final train loss than both lr-find rows)", "",
          won.to_markdown(index=False), "",
          f"Smallest budget at which advise wins on every arm: {smallest or 'none of ' + ', '.join(budgets)}", "",
          "## advise's answers", "", *[f"- {a['arm']} @ {a['budget']}: `{a['answer']}`" for a in all_advice], "",
          f"Benchmark wall time (all arms, first start to last end): {wall:.0f} s"]
    (out / "bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)


if __name__ == "__main__":
    main()
