"""Figures draw what the stability tables say, survive degenerate input, and redraw from committed files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_cfg
from warmup_lab import archive, plots, runs, stability
from warmup_lab.report import build_report
from warmup_lab.job import train

LRS = (0.01, 0.02, 0.04, 0.08)
CRITERIA = ("plain", "loss_frac_0.5")


def probes(edges: dict[int, list[float]], lrs=LRS, task="toy") -> pd.DataFrame:
    """Seed s of warmup length T_w is stable up to edges[T_w][s] (diverged above); ends at 0.3 x l0."""
    rows = []
    for tw, per_seed in edges.items():
        for seed, edge in enumerate(per_seed):
            for lr in lrs:
                ok = lr <= edge
                rows.append({"task": task, "warmup": "linear" if tw else "none", "warmup_steps": tw, "seed": seed,
                             "lr": lr, "status": runs.COMPLETED if ok else runs.DIVERGED, "init_loss": 2.0,
                             "final_train_loss": 0.6 if ok else math.nan, "final_eval_loss": 0.7 if ok else math.nan})
    return pd.DataFrame(rows)


def figure(p: pd.DataFrame, tmp_path: Path) -> tuple[plots.Drawn, dict[str, pd.DataFrame]]:
    keys = stability.setting_keys(p)
    tables = stability.tables(p, keys, CRITERIA)
    drawn = plots.eta_max_vs_warmup(tables[stability.ETA_FILE], tables[stability.SUMMARY_FILE], keys, CRITERIA,
                                    tmp_path, lrs=tables[stability.P_STABLE_FILE])
    return drawn, tables


def test_the_figure_draws_the_eta_max_the_stability_module_computes(tmp_path):
    # T_w=0: seed 2 has no stable LR (censored below); T_w=10: seed 0 is stable everywhere (censored above).
    drawn, tables = figure(probes({0: [0.02, 0.04, 0.005], 10: [0.1, 0.04, 0.04]}), tmp_path)
    assert drawn.path.is_file() and drawn.path.stat().st_size > 10_000
    per_seed = tables[stability.ETA_FILE]
    v = drawn.values
    for _, row in per_seed.iterrows():
        mark = v[(v.criterion == row.criterion) & (v.warmup_steps == row.warmup_steps) & (v.seed == row.seed)]
        assert len(mark) == 1
        kind = mark["kind"].iloc[0]
        assert kind == (row.censored or "point")
        assert mark["y"].iloc[0] == pytest.approx(row.hi if row.censored == "below" else row.eta_max)
    summary = tables[stability.SUMMARY_FILE]
    medians = v[v.kind == "median"].set_index(["criterion", "warmup_steps"])
    for _, row in summary.iterrows():
        assert medians.loc[(row.criterion, row.warmup_steps), "y"] == pytest.approx(row.estimate)
    # the censored seeds are drawn (as arrows), never dropped
    assert {"below", "above"} <= set(v.kind)


@pytest.mark.parametrize("edges", [
    {0: [0.02]},                      # one seed, one setting: one point
    {0: [0.001, 0.001], 10: [0.001]},  # every seed censored below
])
def test_eta_max_figure_on_degenerate_input(edges, tmp_path):
    drawn, tables = figure(probes(edges), tmp_path)
    assert drawn.path is not None and drawn.path.is_file()
    n_seeds = sum(len(s) for s in edges.values()) * len(CRITERIA)
    assert (drawn.values.kind != "median").sum() == n_seeds


@pytest.mark.parametrize("lrs", [(0.02,), (0.02, 0.04)])
def test_no_eta_max_or_p_stable_figure_from_fewer_than_3_lrs(lrs, tmp_path):
    # every seed would be a censoring arrow, every P(stable) curve one or two points: the tables say it instead
    for name in ("eta_max_vs_warmup.png", "p_stable_vs_lr.png"):  # drawn by an earlier report: removed, not left stale
        (tmp_path / name).write_bytes(b"old")
    drawn, tables = figure(probes({0: [0.02, 0.001], 10: [0.05]}, lrs), tmp_path)
    assert drawn.path is None and "fewer than 3 target LRs" in plots.note_or_link(drawn)
    keys = stability.setting_keys(probes({0: [0.02]}, lrs))
    ps = plots.p_stable_vs_lr(tables[stability.P_STABLE_FILE], keys, CRITERIA, tmp_path)
    assert ps.path is None and "fewer than 3 target LRs" in plots.note_or_link(ps)
    assert not list(tmp_path.glob("*.png"))


def test_eta_max_figure_without_a_table_says_why(tmp_path):
    drawn = plots.eta_max_vs_warmup(pd.DataFrame(), pd.DataFrame(), [], CRITERIA, tmp_path)
    assert drawn.path is None and "no eta_max" in plots.note_or_link(drawn)


def test_p_stable_figure_draws_the_table_with_wilson_intervals(tmp_path):
    p = probes({0: [0.02, 0.04, 0.005], 10: [0.1, 0.04, 0.04]})
    keys = stability.setting_keys(p)
    ps = stability.p_stable(stability.judge(p, CRITERIA, keys), keys)
    drawn = plots.p_stable_vs_lr(ps, keys, CRITERIA, tmp_path)
    assert drawn.path.is_file()
    assert sorted(drawn.values["p_stable"]) == sorted(ps["p_stable"])
    # every point carries its Wilson interval (scipy's binomtest(...).proportion_ci(0.9, method="wilson"))
    row = drawn.values[(drawn.values["p_stable"] > 0) & (drawn.values["p_stable"] < 1)].iloc[0]
    assert row["n"] == 3 and row["p_low"] < row["p_stable"] < row["p_high"]
    assert stability.wilson(2, 3) == pytest.approx((0.2535, 0.9217), abs=1e-4)
    assert stability.wilson(3, 3) == pytest.approx((0.5258, 1.0), abs=1e-4)


def test_heatmap_shows_n_per_cell_and_skips_one_cell(tmp_path):
    cells = pd.DataFrame({"warmup_steps": [0, 0, 10, 10], "target_lr": [0.1, 0.2, 0.1, 0.2],
                          "mean": [0.9, np.nan, 0.95, 0.5], "n": [5, 5, 3, 5], "n_diverged": [0, 5, 0, 1]})
    drawn = plots.heatmap(cells, "task=toy", "final_eval_acc", tmp_path)
    assert drawn.path.is_file() and drawn.values["n"].tolist() == [5, 5, 3, 5]
    assert plots.heatmap(cells.iloc[:1], "task=toy", "final_eval_acc", tmp_path).path is None
    # a shared colour scale: the same value has the same colour in every map that gets the same limits
    import matplotlib.image as mpimg
    a = plots.heatmap(cells, "task=a", "final_eval_acc", tmp_path, limits=(0.0, 1.0)).path
    b = plots.heatmap(cells.assign(mean=[0.9, np.nan, 0.95, 0.0]), "task=b", "final_eval_acc", tmp_path,
                      limits=(0.0, 1.0)).path
    assert (mpimg.imread(a) == mpimg.imread(b)).mean() > 0.9  # only the changed cell (and title) differ


def test_loss_curves_draw_every_seed_from_an_archive_alone(tmp_path):
    res = pd.DataFrame([{"warmup": "none", "warmup_steps": 0, "target_lr": 0.1, "seed": s, "status": st,
                         "init_loss": 2.0, "steps_run": n, "config_hash": f"h{s}", "run_path": str(tmp_path / "gone")}
                        for s, (st, n) in enumerate([(runs.COMPLETED, 30), (runs.COMPLETED, 30), (runs.DIVERGED, 4)])])
    table = pd.concat([pd.DataFrame({"config_hash": f"h{s}", "step": range(n), "loss": np.linspace(2, 0.5, n),
                                     "lr": 0.1, "spike": [1 if t == 2 else 0 for t in range(n)]})
                       for s, n in enumerate([30, 30, 4])])
    curves = archive.Curves(table)
    drawn = plots.loss_curves(res, curves, "task=toy", tmp_path)
    assert drawn.path.is_file() and drawn.values["seed"].tolist() == [0, 1, 2]
    assert plots.lr_curves(res, curves, "task=toy", tmp_path).path.is_file()
    assert plots.loss_curves(res, archive.Curves(), "task=toy", tmp_path).path is None  # nothing to draw


def test_committed_results_redraw_every_figure_without_the_runs(tmp_path):
    sweep = tmp_path / "sweeps" / "toy"
    for tw in (0, 2):
        for lr in (1e-3, 5e-3, 3e-2):  # 3 LRs: the fewest an eta_max or P(stable) figure is drawn from
            for seed in (0, 1):
                cfg = make_cfg(["task=reverse", "schedule=linear_constant", f"schedule.warmup_steps={tw}",
                                f"optimizer.lr={lr}", f"seed={seed}", "train.steps=6", "train.batch_size=8",
                                "train.eval_every=0", "train.eval_batches=1", "train.checkpoint_every=0",
                                "train.progress=false", "logger=none", "experiment_name=toy",
                                f"runs_root={sweep}"])
                train(cfg)
    out = tmp_path / "results" / "toy"
    build_report([sweep], out, criteria=CRITERIA)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert archive.CURVES_FILE in first and "eta_max_vs_warmup.png" in first
    shutil.rmtree(tmp_path / "sweeps")  # a fresh clone: results/ only, no run directory, no re-training
    build_report([out], out, criteria=CRITERIA)
    again = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(again) == set(first)
    for name in (stability.ETA_FILE, stability.SUMMARY_FILE, stability.P_STABLE_FILE, archive.CURVES_FILE):
        assert again[name] == first[name], name
    md = (out / "report.md").read_text()
    assert "Figure skipped" not in md  # 3 LRs: every figure is drawn
    for png in (n for n in first if n.endswith(".png")):
        assert f"]({png})" in md


def test_lr_curves_draw_every_setting_at_the_largest_lr_all_of_them_ran(tmp_path):
    """A search probes each setting at its own LRs: the figure's one target LR must be one every curve ran."""
    probes = {("none", 0): [0.04, 0.16], ("linear", 30): [0.04, 0.16, 0.64]}
    rows = [{"warmup": w, "warmup_steps": tw, "target_lr": lr, "seed": 0, "steps_run": 20, "config_hash": f"{w}{lr}"}
            for (w, tw), lrs in probes.items() for lr in lrs]
    table = pd.concat([pd.DataFrame({"config_hash": r["config_hash"], "step": range(20), "loss": 1.0,
                                     "lr": r["target_lr"] * np.minimum(1, np.arange(20) / max(r["warmup_steps"], 1))})
                       for r in rows])
    drawn = plots.lr_curves(pd.DataFrame(rows), archive.Curves(table), "task=toy", tmp_path)
    assert sorted(drawn.values["lr"]) == [0.16, 0.16]
    own = [r for r in rows if (r["warmup"], r["target_lr"]) in {("none", 0.04), ("linear", 0.64)}]
    assert sorted(plots.lr_curves(pd.DataFrame(own), archive.Curves(table), "task=toy", tmp_path).values["lr"]) == [0.04, 0.64]


def test_heatmap_text_contrasts_with_its_cell_and_empty_cells_say_no_runs(tmp_path):
    # final_eval_acc: viridis, the lowest mean dark purple, the highest yellow
    cells = pd.DataFrame({"warmup_steps": [0, 0, 10, 10], "target_lr": [0.1, 0.2, 0.1, 0.2],
                          "mean": [0.1, 0.9, 0.5, np.nan], "n": [3, 3, 3, 0], "n_diverged": [0, 0, 0, 0]})
    v = plots.heatmap(cells, "task=toy", "final_eval_acc", tmp_path).values.set_index(["warmup_steps", "target_lr"])
    assert v.loc[(0, 0.1), "text_color"] == "white"  # dark purple cell
    assert v.loc[(0, 0.2), "text_color"] == "black"  # yellow cell
    empty = v.loc[(10, 0.2)]
    assert empty["empty"] and empty["text"] == "no runs" and empty["text_color"] == "black"  # on light grey
    assert not v.loc[(10, 0.1), "empty"]
    assert plots.text_color((0.267, 0.005, 0.329, 1)) == "white" and plots.text_color((0.993, 0.906, 0.144, 1)) == "black"


def test_heatmap_text_shrinks_with_the_number_of_columns(tmp_path):
    def grid(n_lrs):
        return pd.DataFrame([{"warmup_steps": tw, "target_lr": 0.01 * 2 ** j, "mean": 0.5 + 0.01 * j, "n": 3,
                              "n_diverged": 0} for tw in (0, 10) for j in range(n_lrs)])
    narrow = plots.heatmap(grid(4), "task=a", "final_eval_acc", tmp_path)
    wide = plots.heatmap(grid(24), "task=b", "final_eval_acc", tmp_path)
    assert wide.values["fontsize"].iloc[0] < narrow.values["fontsize"].iloc[0]
    import matplotlib.image as mpimg
    assert mpimg.imread(wide.path).shape[1] <= (plots.HEATMAP_MAX_WIDTH + 0.5) * plots.DPI  # about a page wide


def curves_of(losses: dict[int, list[float]], status: dict[int, str] | None = None, init_loss: float = 2.0):
    status = status or {}
    res = pd.DataFrame([{"warmup": "none", "warmup_steps": 0, "target_lr": 0.1, "seed": s,
                         "status": status.get(s, runs.COMPLETED), "init_loss": init_loss, "steps_run": len(v),
                         "config_hash": f"h{s}", "run_path": "gone"} for s, v in losses.items()])
    table = pd.concat([pd.DataFrame({"config_hash": f"h{s}", "step": range(len(v)), "loss": v, "lr": 0.1})
                       for s, v in losses.items()])
    return res, archive.Curves(table)


def test_loss_curves_show_the_real_peak_and_mark_non_finite_losses(tmp_path):
    # seed 0 peaks at 500 x l0 (was capped at 10 x l0); seed 1 diverges to inf at step 3 and stays non-finite
    res, curves = curves_of({0: [2.0, 1000.0, 1.5, 1.0, 0.8], 1: [2.0, 3.0, 5.0, np.inf, np.nan]},
                            {1: runs.DIVERGED})
    v = plots.loss_curves(res, curves, "task=toy", tmp_path).values
    seeds = v[v["kind"] == "seed"].set_index("seed")
    assert seeds.loc[0, "peak"] == 1000.0 and seeds.loc[1, "peak"] == 5.0
    assert (seeds["y_top"] >= 1000.0).all() and (seeds["yscale"] == "log").all()  # 0.8 .. 1000: log
    clipped = v[v["kind"] == "nonfinite"]
    assert clipped[["seed", "step"]].values.tolist() == [[1, 3.0]]  # one mark per non-finite stretch


def test_loss_curves_are_linear_within_a_decade(tmp_path):
    res, curves = curves_of({0: [2.0, 3.0, 1.5, 1.0, 0.8], 1: [2.0, 2.5, 1.4, 0.9, 0.7]})
    v = plots.loss_curves(res, curves, "task=toy", tmp_path).values
    assert (v["kind"] == "seed").all() and (v["yscale"] == "linear").all() and (v["y_top"] >= 3.0).all()


def test_eta_max_medians_carry_their_coverage_and_censored_medians_are_hollow(tmp_path):
    # T_w=0: every seed stable nowhere (median censored below: hollow); T_w=10: three exact seeds
    drawn, tables = figure(probes({0: [0.001, 0.001, 0.001], 10: [0.02, 0.04, 0.04]}), tmp_path)
    med = drawn.values[drawn.values["kind"] == "median"].set_index(["criterion", "warmup_steps"])
    summary = tables[stability.SUMMARY_FILE].set_index(["criterion", "warmup_steps"])
    for idx, row in summary.iterrows():
        assert med.loc[idx, "hollow"] == bool(row["estimate_censored"])
        assert med.loc[idx, "ci_coverage"] == pytest.approx(row["ci_coverage"])
    assert med.xs(0, level="warmup_steps")["hollow"].all() and not med.xs(10, level="warmup_steps")["hollow"].any()
    # the legend names the interval and its exact coverage from the table (3 seeds: 75%), not a fixed string
    text = plots.coverage_text(med.reset_index())
    assert text == f"{stability.INTERVAL_TEXT} interval, nominal 90%, exact coverage 75%"
    mixed = pd.DataFrame({"interval": ["x", "x"], "ci_level": [0.9, 0.9], "ci_coverage": [0.75, 0.9375]})
    assert plots.coverage_text(mixed) == "x interval, nominal 90%, exact coverage 75-94%"


def test_lr_curves_that_are_identical_are_drawn_distinguishably_and_named(tmp_path):
    # constant@0 and none@0 apply the same LR; linear@10 differs; exponential@0 is a second copy of none@0
    settings = [("none", 0), ("constant", 0), ("linear", 10), ("exponential", 0)]
    rows = [{"warmup": w, "warmup_steps": tw, "target_lr": 0.1, "seed": 0, "steps_run": 20, "config_hash": f"{w}{tw}"}
            for w, tw in settings]
    table = pd.concat([pd.DataFrame({"config_hash": r["config_hash"], "step": range(20), "loss": 1.0,
                                     "lr": 0.1 * np.minimum(1, np.arange(20) / max(r["warmup_steps"], 1))
                                     if r["warmup_steps"] else 0.1}) for r in rows])
    v = plots.lr_curves(pd.DataFrame(rows), archive.Curves(table), "task=toy", tmp_path).values.set_index("setting")
    assert v.loc["linear@10", "identical_to"] == "" and v.loc["linear@10", "linestyle"] == "-"
    first = v.loc["constant@0", "identical_to"]  # groupby order: constant, exponential, linear, none
    assert first == "" and v.loc["exponential@0", "identical_to"] == "constant@0"
    assert v.loc["none@0", "identical_to"] == "constant@0"
    styles = v.loc[["constant@0", "exponential@0", "none@0"], "linestyle"].map(str)
    assert styles.nunique() == 3  # three equal curves, three line styles
