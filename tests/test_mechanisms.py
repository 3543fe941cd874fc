"""The mechanisms' analysis: edge of stability on a real short GD run, catapult phases, warmup's range,
and their summaries over seeds (median and range, censored seeds at their bound)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest

from conftest import make_cfg, run_cli
from warmup_lab import runs
from warmup_lab.mechanisms import (CATAPULT, DIVERGED, LAZY, build_report, catapult_boundaries, ffn_grad_norms,
                                   late_sharpness_ratio, load_runs, lr_label, phase, phase_boundaries, plot_preln,
                                   preln_table, rise_ratio, sharpening_table, trainable_range, warmup_md,
                                   warmup_tables)
from warmup_lab.summary import write_summary
from warmup_lab.job import train

TINY = ["data.subset=100", "model.width=32", "train.progress=false", "hydra/launcher=basic"]


def sharpness_of(run_dir) -> list[float]:
    return [float(r["sharpness"]) for r in csv.DictReader((run_dir / "sharpness.csv").open())]


def test_late_sharpness_of_constant_lr_gd_settles_at_two_over_eta(tmp_path):
    """Cohen et al.: full-batch GD at constant eta drives the sharpness to 2/eta and holds it there.
    Started above the edge (c = 4), the sharpness first falls below 2/eta, then climbs back to it."""
    cfg = make_cfg(["experiment=mechanisms/edge_of_stability", "optimizer.lr_in_sharpness_units=4.0",
                    "train.steps=300", "sharpness.every=10", *TINY])
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed"
    ratios = [s * summary["target_lr"] / 2 for s in sharpness_of(tmp_path)]
    late = late_sharpness_ratio(sharpness_of(tmp_path), summary["target_lr"])
    assert 0.9 < late["mean"] < 1.15, late
    assert min(ratios[:5]) < 0.95 < late["mean"]  # it dipped below the edge and came back up to it


def test_gd_below_the_edge_stays_below_two_over_eta(tmp_path):
    summary = train(make_cfg(["experiment=mechanisms/edge_of_stability", "optimizer.lr_in_sharpness_units=1.0",
                              "train.steps=100", "sharpness.every=20", *TINY]), tmp_path)
    assert late_sharpness_ratio(sharpness_of(tmp_path), summary["target_lr"])["max"] < 0.6


def test_three_catapult_phases_on_real_runs_and_the_report(tmp_path):
    root = tmp_path / "sweeps"
    for c in (1.0, 4.0, 30.0):
        cfg = make_cfg(["experiment=mechanisms/catapult", f"optimizer.lr_in_sharpness_units={c}", "train.steps=100",
                        "sharpness.every=100", f"runs_root={root}", *TINY])
        train(cfg, root / f"catapult-{c}")
    out = tmp_path / "results"
    build_report(root, out)
    rows = {float(r["c"]): r for r in csv.DictReader((out / "catapult.csv").open())}
    assert [rows[c]["phase"] for c in (1.0, 4.0, 30.0)] == [LAZY, CATAPULT, DIVERGED]
    assert float(rows[4.0]["end_sharpness_ratio"]) < 1.0  # after the catapult, flatter than 2/eta
    assert (out / "catapult.png").stat().st_size > 0 and "Catapult phases" in (out / "report.md").read_text()
    assert [r["seed"] for r in csv.DictReader((out / "catapult_boundaries.csv").open())] == ["0"]
    assert {r["boundary"] for r in csv.DictReader((out / "catapult_boundaries_summary.csv").open())} == {
        "last_lazy", "first_catapult", "last_trainable", "first_diverged"}
    assert {r["norm"] for r in csv.DictReader((out / "grad_norms_at_init.csv").open())} == {"pre", "post"}


def test_rise_ratio_and_phase_definitions():
    assert rise_ratio([3.0, 2.0, 1.0]) == pytest.approx(2 / 3)  # only falls: below 1
    assert rise_ratio([3.0, 2.0, 5.0, 1.0]) == pytest.approx(2.5)
    assert rise_ratio([1.0, math.nan, 2.0]) == pytest.approx(2.0)
    assert phase("completed", [3.0, 2.0, 1.0]) == LAZY
    assert phase("completed", [3.0, 4.0, 1.0]) == CATAPULT
    assert phase("diverged", [3.0, 40.0, math.inf]) == DIVERGED
    assert phase("failed_to_train", [3.0, 2.9]) == DIVERGED


def test_phase_boundaries_read_the_grid_in_order():
    cs = [4.0, 1.0, 2.0, 8.0, 16.0, 2.8]
    phases = [CATAPULT, LAZY, LAZY, CATAPULT, DIVERGED, CATAPULT]
    assert phase_boundaries(cs, phases) == {"last_lazy": 2.0, "first_catapult": 2.8, "last_trainable": 8.0,
                                            "first_diverged": 16.0, "trainable_censored": ""}
    top = phase_boundaries([1.0, 2.0, 4.0], [LAZY, CATAPULT, CATAPULT])  # nothing diverged: a lower bound
    assert (top["last_trainable"], top["trainable_censored"]) == (4.0, "above") and math.isnan(top["first_diverged"])


def test_the_largest_trainable_c_is_the_harness_s_eta_max_rule():
    """stability.eta_max_of on c: a lucky run above the first failure does not count, a failure below every
    trained c does not end the range (the old private rule read that seed as untrainable), nothing trained
    is censored below with the grid's bottom as its bound, everything trained censored above."""
    assert trainable_range([2, 4, 8, 16], [True, True, False, True])["largest_trainable_c"] == 4
    low = trainable_range([2.0, 2.8, 4.0, 5.6], [False, True, True, False])
    assert low == {"largest_trainable_c": 4.0, "first_untrainable_c": 5.6, "censored": "", "non_monotone": True}
    none = trainable_range([2, 4], [False, False])
    assert math.isnan(none["largest_trainable_c"]) and (none["first_untrainable_c"], none["censored"]) == (2, "below")
    assert trainable_range([2, 4], [True, True])["censored"] == "above"
    df = pd.DataFrame({"part": "warmup", "activation": "tanh", "warmup_steps": 0, "seed": 0, "c": [2.0, 2.8, 4.0, 5.6],
                       "status": [runs.DIVERGED, runs.COMPLETED, runs.COMPLETED, runs.DIVERGED]})
    per_seed, summary = warmup_tables(df)
    assert per_seed.largest_trainable_c.tolist() == [4.0] and summary["median"].tolist() == [4.0]
    assert warmup_md(per_seed, summary)["per seed"].tolist() == ["4*"]  # flagged non-monotone


GRID = [2.0, 4.0, 8.0, 16.0]


def warmup_runs(largest: dict[tuple[int, int], float]) -> pd.DataFrame:
    """Warmup runs on GRID: (warmup_steps, seed) -> its largest trainable c (inf: every c trained, 0: none)."""
    return pd.DataFrame([{"part": "warmup", "activation": "relu", "warmup_steps": w, "seed": s, "c": c,
                          "status": runs.COMPLETED if c <= top else runs.DIVERGED}
                         for (w, s), top in largest.items() for c in GRID])


def test_warmup_summary_is_the_median_and_range_with_censored_seeds_at_their_bound():
    per_seed, summary = warmup_tables(warmup_runs({
        (0, 0): 4.0, (0, 1): 8.0, (0, 2): 2.0,            # exact: median 4, not the mean 4.67
        (16, 0): math.inf, (16, 1): 4.0, (16, 2): 8.0,    # one seed trained up to the top: max >= 16, median exact
        (64, 0): math.inf, (64, 1): math.inf, (64, 2): 8.0,  # two: the median itself is a lower bound
        (128, 0): 0.0, (128, 1): 4.0, (128, 2): 8.0}))    # one trained nowhere: min < 2
    rows = summary.set_index("warmup_steps")
    assert rows.loc[0, ["median", "min", "max", "n_seeds"]].tolist() == [4.0, 2.0, 8.0, 3]
    assert rows.loc[16, ["median", "median_censored", "max", "max_censored", "n_censored_above"]].tolist() == [
        8.0, "", 16.0, "above", 1]
    assert rows.loc[64, ["median", "median_censored", "min", "min_censored"]].tolist() == [16.0, "above", 8.0, ""]
    assert rows.loc[128, ["min", "min_censored", "median", "n_censored_below"]].tolist() == [2.0, "below", 4.0, 1]
    table = warmup_md(per_seed, summary).set_index("warmup_steps")
    assert table.loc[16, "per seed"] == ">= 16, 4, 8" and table.loc[16, "median [min, max]"] == "8 [4, >= 16]"
    assert table.loc[64, "median [min, max]"] == ">= 16 [8, >= 16]" and table.loc[64, "censored"] == 2
    assert table.loc[128, "per seed"] == "< 2, 4, 8" and table.loc[128, "median [min, max]"] == "4 [< 2, 8]"


def test_catapult_boundaries_per_seed_and_their_median_and_range():
    phases = {0: [LAZY, CATAPULT, CATAPULT, DIVERGED], 1: [LAZY, LAZY, CATAPULT, DIVERGED],
              2: [LAZY, LAZY, CATAPULT, CATAPULT]}  # seed 2: nothing diverged up to the top
    tab = pd.DataFrame([{"activation": "tanh", "seed": s, "c": c, "phase": p}
                        for s, ps in phases.items() for c, p in zip(GRID, ps)])
    per_seed, summary = catapult_boundaries(tab)
    assert per_seed[["seed", "last_lazy", "first_catapult", "last_trainable"]].values.tolist() == [
        [0, 2.0, 4.0, 8.0], [1, 4.0, 8.0, 8.0], [2, 4.0, 8.0, 16.0]]
    assert per_seed.trainable_censored.tolist() == ["", "", "above"]
    rows = summary.set_index("boundary")
    assert rows.loc["first_catapult", ["median", "min", "max", "n_seeds"]].tolist() == [8.0, 4.0, 8.0, 3]
    assert rows.loc["last_trainable", ["median", "max", "max_censored"]].tolist() == [8.0, 16.0, "above"]
    assert rows.loc["first_diverged", ["median", "n_seeds"]].tolist() == [16.0, 2]  # absent on seed 2's grid


def test_pre_ln_gradient_at_the_last_layer_shrinks_with_depth_post_ln_does_not():
    """Xiong et al. 2020 (Theorem 1): Pre-LN's output-side gradient scales like 1/sqrt(L); Post-LN's does not."""
    def last(norm, depth):
        return sum(ffn_grad_norms(norm, depth, seed)[-1] for seed in range(3)) / 3

    assert len(ffn_grad_norms("post", 6, 0)) == 6
    assert last("pre", 24) < 0.8 * last("pre", 6)
    assert last("post", 24) > last("pre", 24)


@pytest.mark.slow
def test_load_runs_skips_other_experiments_and_the_cli_rejects_a_missing_root(tmp_path):
    train(make_cfg(["task=digits", "model=mlp", "data.size=8", "train.full_batch=true", "train.steps=3",
                    "logger=none", "train.progress=false", "name=other"]), tmp_path / "sweeps" / "other")
    assert load_runs(tmp_path / "sweeps").empty
    out = run_cli("warmup_lab.mechanisms", [str(tmp_path / "nowhere")], cwd=tmp_path)
    assert out.returncode != 0 and "nowhere" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_non_finite_final_loss_does_not_break_the_pre_vs_post_ln_table(tmp_path):
    """A run whose final loss is nan (stored as the string "nan") is a number to the table, not a TypeError;
    the table gives the median of the others (0.7, where their mean would be 1.4) and their range."""
    for seed, final in enumerate([0.5, math.nan, 0.7, 3.0]):
        run_dir = tmp_path / f"preln-{seed}"
        run_dir.mkdir()
        (run_dir / runs.CONFIG_FILE).write_text("name: preln-adam\nmodel: {activation: null}\n")
        (run_dir / runs.METRICS_FILE).write_text("step,loss\n0,2.8\n1,nan\n")
        write_summary(run_dir, {"status": runs.COMPLETED, "seed": seed, "norm": "post", "warmup": "none",
                                "warmup_steps": 0, "target_lr": 8e-3, "train_steps": 2, "init_loss": 2.8,
                                "final_train_loss": final, "task_info": {}})
    tab = preln_table(load_runs(tmp_path))
    assert tab[["median", "min", "max", "seeds"]].values.tolist() == [[0.7, 0.5, 3.0, 3]]


def test_the_pre_vs_post_ln_lr_axis_labels_only_the_lrs_run(tmp_path):
    """On a log axis matplotlib labels 3e-3 and 4e-3 as minor ticks that overlap: ticks at the LRs run only."""
    lrs = [1e-3, 3e-3, 4e-3, 8e-3]
    tab = pd.DataFrame([{"norm": n, "warmup_steps": 0, "target_lr": lr, "median": 0.1, "min": 0.05, "max": 0.2,
                         "seeds": 3} for n in ("pre", "post") for lr in lrs])
    grads = pd.DataFrame([{"norm": n, "depth": 2, "seed": 0, "layer": k, "grad_norm": 1.0} for n in ("pre", "post")
                          for k in (1, 2)])
    ax = plot_preln(tab, grads, tmp_path / "preln.png").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1e-3", "3e-3", "4e-3", "8e-3"]
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
    assert "median over seeds, bars: range" in ax.get_title()
    assert [lr_label(x) for x in (1e-3, 2.5e-4, 0.1)] == ["1e-3", "2.5e-4", "1e-1"]


def test_a_run_reached_under_two_names_is_read_once(tmp_path):
    """catapult's seed-0 runs were named without `-s0`: renamed, the same config hash must not count twice."""
    for name in ("catapult-tanh-c1.0-abc", "catapult-tanh-c1.0-s0-abc"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / runs.CONFIG_FILE).write_text(f"name: {name}\nmodel: {{activation: tanh}}\n")
        (run_dir / runs.METRICS_FILE).write_text("step,loss\n0,2.0\n1,1.0\n")
        write_summary(run_dir, {"status": runs.COMPLETED, "seed": 0, "config_hash": "abc", "warmup_steps": 0,
                                "target_lr": 0.1, "train_steps": 2, "init_loss": 2.0, "final_train_loss": 1.0,
                                "task_info": {"lr_in_sharpness_units": 1.0, "lambda0": 10.0}})
    assert len(load_runs(tmp_path)) == 1


def test_the_catapult_preset_sweeps_three_seeds_under_distinct_names():
    from hydra import compose, initialize_config_dir
    from warmup_lab.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mechanisms/catapult"], return_hydra_config=True)
    assert str(cfg.hydra.sweeper.params.seed).split(",") == ["0", "1", "2"]
    cfgs = [make_cfg(["experiment=mechanisms/catapult", "optimizer.lr_in_sharpness_units=1.0", f"seed={s}"])
            for s in (0, 1, 2)]
    assert [c.name for c in cfgs] == [f"catapult-tanh-c1.0-s{s}" for s in (0, 1, 2)]
    assert len({runs.config_hash(c) for c in cfgs}) == 3


@pytest.mark.parametrize("part", ["catapult", "edge_of_stability", "warmup_range"])
def test_the_full_scale_presets_are_cohen_et_al_s_cifar10_5k_setting(part):
    cfg = make_cfg([f"experiment=mechanisms_full/{part}"])
    assert (cfg.task.name, cfg.data.subset, cfg.task.loss, cfg.train.full_batch) == ("cifar10", 5000, "mse", True)
    assert cfg.runs_root == "sweeps/mechanisms_full" and cfg.model.family == "mlp"


def test_non_finite_losses_and_sharpness_do_not_crash_the_mechanisms_report(tmp_path):
    """Runs whose losses are nan or inf from the first step (and a nan sharpness) in every part: the tables
    and figures are written, the bad runs read as diverged or with NaN cells, nothing raises."""
    from warmup_lab.record import SHARPNESS_FILE

    root = tmp_path / "sweeps"
    bad = [math.nan, math.inf, 1.0, math.nan]
    for i, (part, status, losses) in enumerate([
            ("eos", runs.COMPLETED, [1.0, 0.5, math.nan, 0.2]), ("catapult", runs.DIVERGED, bad),
            ("catapult", runs.COMPLETED, [2.0, math.nan, 9.0, 0.5]), ("warmup", runs.DIVERGED, bad),
            ("warmup", runs.COMPLETED, [1.0, 0.8, 0.5, 0.4]), ("preln", runs.COMPLETED, [math.inf] * 4)]):
        run_dir = root / f"{part}-{i}"
        run_dir.mkdir(parents=True)
        (run_dir / runs.CONFIG_FILE).write_text(f"name: {part}-{i}\nmodel:\n  activation: tanh\n")
        (run_dir / runs.METRICS_FILE).write_text("step,loss\n" + "".join(f"{t},{x}\n" for t, x in enumerate(losses)))
        (run_dir / SHARPNESS_FILE).write_text("step,sharpness\n0,nan\n2,3.0\n")
        write_summary(run_dir, {
            "status": status, "seed": 0, "norm": "post", "warmup": "linear", "warmup_steps": 10 * i,
            "target_lr": 0.1 * (i + 1), "train_steps": 4, "init_loss": losses[0], "final_train_loss": losses[-1],
            "catapult_count": 0, "task_info": {"lr_in_sharpness_units": float(i + 1), "lambda0": 10.0}})
    out = tmp_path / "results"
    build_report(root, out)
    rows = list(csv.DictReader((out / "catapult.csv").open()))
    assert sorted(r["phase"] for r in rows) == sorted([DIVERGED, CATAPULT])
    for name in ("eos.csv", "warmup.csv", "pre_vs_post_ln.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    assert "median [min, max]" in (out / "report.md").read_text()
    # a fresh clone has no run directories: the committed runs.parquet redraws every table to the last digit
    again = tmp_path / "again"
    build_report(out, again)
    for table in sorted(out.glob("*.csv")):
        assert (again / table.name).read_text() == table.read_text(), table.name


def test_progressive_sharpening_is_reproduced_only_if_it_rises_from_below_0_6_to_0_9_and_stays():
    eta = 0.1  # 2/eta = 20
    def run(seed, ratios):
        return {"part": "sharpening", "activation": "tanh", "c": 1.0, "seed": seed, "lambda0": 10.0, "target_lr": eta,
                "sharp_steps": [50 * (i + 1) for i in range(len(ratios))], "sharpness": [x * 2 / eta for x in ratios],
                "losses": [1.0, 0.5], "final_train_loss": 0.5, "status": "completed"}
    df = pd.DataFrame([run(0, [0.43, 0.6, 0.92, 0.95, 1.01, 0.98]),   # rises, reaches, stays
                       run(1, [0.43, 0.95, 0.85, 0.97]),              # reaches, then falls back below 0.9
                       run(2, [0.65, 0.95, 0.99, 1.0])])              # starts above 0.6
    tab = sharpening_table(df).set_index("seed")
    assert tab.loc[0, "reproduced"] and tab.loc[0, "first_step_reached"] == 150
    assert tab.loc[0, "lowest_after_reached"] == pytest.approx(0.92) and tab.loc[0, "max_ratio"] == pytest.approx(1.01)
    assert not tab.loc[1, "reproduced"] and tab.loc[1, "lowest_after_reached"] == pytest.approx(0.85)
    assert not tab.loc[2, "reproduced"] and tab.loc[2, "start_ratio"] == pytest.approx(0.65)


def test_the_catapult_figure_sets_runs_of_one_c_apart_and_keeps_every_marker_inside_its_axes(tmp_path):
    from warmup_lab.mechanisms import CATAPULT, DIVERGED, LAZY, plot_catapult

    rows = []
    for act in ("relu", "tanh"):
        for seed in (0, 1, 2):
            for c, ph, rise, sharp in ((0.5, LAZY, 0.998, 0.2), (2.0, LAZY, 0.998, 0.6), (4.0, CATAPULT, 3.0, 0.9),
                                       (16.0, DIVERGED, 1e30, float("nan"))):
                rows.append({"activation": act, "seed": seed, "c": c, "phase": ph, "rise_ratio": rise,
                             "end_sharpness_ratio": sharp})
    tab = pd.DataFrame(rows)
    fig = plot_catapult(tab, 300, tmp_path / "catapult.png")
    assert (tmp_path / "catapult.png").stat().st_size > 10_000
    for ax in fig.axes:
        points = np.concatenate([pc.get_offsets() for pc in ax.collections if len(pc.get_offsets())])
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        # every marker well inside the limits, none on the edge: a margin of at least 2^0.2 in c
        assert (points[:, 0] > x0 * 2 ** 0.2).all() and (points[:, 0] < x1 / 2 ** 0.2).all()
        assert (points[:, 1] > y0).all() and (points[:, 1] < y1).all()
        # no two runs on one spot: each (activation, seed) of a c at its own x
        assert len({tuple(p) for p in points.round(12)}) == len(points)
    assert len(fig.axes[0].collections) and sum(len(pc.get_offsets()) for pc in fig.axes[0].collections) == len(tab)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"relu", "tanh", LAZY, CATAPULT, DIVERGED, "c = 2 and c = 4"} <= set(labels)
