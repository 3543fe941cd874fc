"""The mechanisms' analysis: edge of stability on a real short GD run, catapult phases, warmup's range."""

from __future__ import annotations

import csv
import math

import pytest

from conftest import make_cfg, run_cli
from warmup_lab import runs
from warmup_lab.mechanisms import (CATAPULT, DIVERGED, LAZY, build_report, ffn_grad_norms, largest_trainable,
                                   late_sharpness_ratio, load_runs, phase, phase_boundaries, preln_table, rise_ratio)
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
    assert {r["norm"] for r in csv.DictReader((out / "grad_norms_at_init.csv").open())} == {"pre", "post"}


def test_rise_ratio_and_phase_definitions():
    assert rise_ratio([3.0, 2.0, 1.0]) == pytest.approx(2 / 3)  # only falls: below 1
    assert rise_ratio([3.0, 2.0, 5.0, 1.0]) == pytest.approx(2.5)
    assert rise_ratio([1.0, math.nan, 2.0]) == pytest.approx(2.0)
    assert phase("completed", [3.0, 2.0, 1.0]) == LAZY
    assert phase("completed", [3.0, 4.0, 1.0]) == CATAPULT
    assert phase("diverged", [3.0, 40.0, math.inf]) == DIVERGED
    assert phase("failed_to_train", [3.0, 2.9]) == DIVERGED


def test_phase_boundaries_and_largest_trainable_read_the_grid_in_order():
    cs = [4.0, 1.0, 2.0, 8.0, 16.0, 2.8]
    phases = [CATAPULT, LAZY, LAZY, CATAPULT, DIVERGED, CATAPULT]
    assert phase_boundaries(cs, phases) == {"last_lazy": 2.0, "first_catapult": 2.8, "last_trainable": 8.0,
                                            "first_diverged": 16.0}
    # a lucky run above the first failure does not count
    assert largest_trainable([2, 4, 8, 16], ["completed", "completed", "diverged", "completed"]) == 4
    assert math.isnan(largest_trainable([2, 4], ["diverged", "diverged"]))


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
    """A run whose final loss is nan (stored as the string "nan") is a number to the table, not a TypeError."""
    for seed, final in enumerate([0.5, math.nan, 0.7]):
        run_dir = tmp_path / f"preln-{seed}"
        run_dir.mkdir()
        (run_dir / runs.CONFIG_FILE).write_text("name: preln-adam\nmodel: {activation: null}\n")
        (run_dir / runs.METRICS_FILE).write_text("step,loss\n0,2.8\n1,nan\n")
        write_summary(run_dir, {"status": runs.COMPLETED, "seed": seed, "norm": "post", "warmup": "none",
                                "warmup_steps": 0, "target_lr": 8e-3, "train_steps": 2, "init_loss": 2.8,
                                "final_train_loss": final, "task_info": {}})
    tab = preln_table(load_runs(tmp_path))
    assert tab[["mean", "min", "max", "seeds"]].values.tolist() == [[pytest.approx(0.6), 0.5, 0.7, 2]]


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
