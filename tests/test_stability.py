"""warmup_lab.stability on crafted probes: criteria, the eta_max rule, statistics over seeds, LR sensitivity."""

import math

import numpy as np
import pandas as pd
import pytest

from warmup_lab import runs, stability
from warmup_lab.stability import GridMismatch, eta_max_of

L0 = 2.3


def probe(lr, status=runs.COMPLETED, final=1.0, seed=0, warmup_steps=0, **kw):
    return {"task": "toy", "warmup": "linear" if warmup_steps else "none", "warmup_steps": warmup_steps,
            "seed": seed, "lr": lr, "status": status, "init_loss": L0,
            "final_train_loss": final if status != runs.DIVERGED else math.nan,
            "final_eval_loss": final + 0.1 if status != runs.DIVERGED else math.nan, **kw}


def grid_probes(thresholds, lrs=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32), warmup_steps=0):
    """Seed s is stable iff lr <= thresholds[s] (diverged above)."""
    return [probe(lr, runs.COMPLETED if lr <= t else runs.DIVERGED, 0.5 + lr, seed, warmup_steps)
            for seed, t in enumerate(thresholds) for lr in lrs]


def test_plain_and_strict_criteria_on_crafted_summaries():
    probes = pd.DataFrame([
        probe(0.01, final=0.2),                      # the best run of the setting
        probe(0.02, final=0.5),                      # <= 0.5 x l0 and <= 3 x best, not <= 2 x best
        probe(0.04, final=1.5),                      # plain only: below l0, above half of it
        probe(0.08, runs.FAILED, final=2.4),         # failed_to_train: final >= l0
        probe(0.16, runs.DIVERGED),
    ])
    judged = stability.judge(probes, ["plain", "loss_frac_0.5", "near_best_2", "near_best_3", "not_diverged"])
    got = judged.pivot(index="lr", columns="criterion", values="stable")
    assert got["plain"].tolist() == [True, True, True, False, False]
    assert got["loss_frac_0.5"].tolist() == [True, True, False, False, False]
    assert got["near_best_2"].tolist() == [True, False, False, False, False]
    assert got["near_best_3"].tolist() == [True, True, False, False, False]
    assert got["not_diverged"].tolist() == [True, True, True, True, False]


def test_criterion_names_parse_or_name_the_fix():
    assert stability.criterion("loss_frac_0.25").value == 0.25 and "0.25 x l0" in stability.criterion("loss_frac_0.25").text
    for bad in ("loss_frac_1.5", "near_best_0.5", "strict", "loss_frac_x"):
        with pytest.raises(ValueError, match=f"criterion='{bad}'.*use learned_<f>.*plain"):
            stability.criterion(bad)


def test_eta_max_rule_on_monotone_non_monotone_and_censored_probes():
    r = eta_max_of([0.04, 0.01, 0.02, 0.08], [False, True, True, False])
    assert (r["eta_max"], r["hi"], r["censored"], r["non_monotone"], r["n_probes"]) == (0.02, 0.04, "", False, 4)
    # stable at 0.01, 0.0119 and 0.16, unstable at 0.04: the edge is the first unstable LR, 0.16 is flagged
    r = eta_max_of([0.01, 0.0119, 0.04, 0.16], [True, True, False, True])
    assert (r["eta_max"], r["hi"], r["non_monotone"]) == (0.0119, 0.04, True)
    # unstable below every stable LR (too slow for a loss bar): flagged, not the edge
    r = eta_max_of([0.001, 0.01, 0.1], [False, True, False])
    assert (r["eta_max"], r["hi"], r["n_unstable_below"], r["non_monotone"]) == (0.01, 0.1, 1, True)
    r = eta_max_of([0.01, 0.02], [False, False])
    assert math.isnan(r["eta_max"]) and r["hi"] == 0.01 and r["censored"] == "below"
    r = eta_max_of([0.01, 0.02], [True, True])
    assert r["eta_max"] == 0.02 and math.isnan(r["hi"]) and r["censored"] == "above"
    r = eta_max_of([0.01, 0.02, 0.02], [True, True, False])  # one of two runs at 0.02 unstable: 0.02 is unstable
    assert (r["eta_max"], r["hi"], r["n_probes"]) == (0.01, 0.02, 3)


def test_bootstrap_ci_is_deterministic_and_contains_the_estimate():
    per_seed = stability.eta_max_per_seed(stability.judge(pd.DataFrame(grid_probes([0.02, 0.04, 0.04, 0.08, 0.16])),
                                                          ["plain"]))
    a = stability.eta_max_summary(per_seed)
    pd.testing.assert_frame_equal(a, stability.eta_max_summary(per_seed))
    row = a.iloc[0]
    assert row["estimate"] == 0.04 and row["n_seeds"] == 5 and row["n_probes"] == 30 and row["ci_level"] == 0.9
    assert row["ci_low"] <= row["estimate"] <= row["ci_high"] and row["ci_low"] < row["ci_high"]
    wide = stability.eta_max_summary(per_seed, level=0.99).iloc[0]
    assert wide["ci_low"] <= row["ci_low"] and wide["ci_high"] >= row["ci_high"]


def test_a_censored_seed_is_in_the_aggregate_and_the_csv(tmp_path):
    # seed 2 is unstable everywhere (censored below); seed 3 stable everywhere (censored above)
    probes = pd.DataFrame(grid_probes([0.04, 0.08, 0.001, 1.0, 0.08]))
    tables = stability.tables(probes, criteria=["plain"])
    stability.write_tables(tmp_path, tables)
    per_seed = stability.read_table(tmp_path / stability.ETA_FILE).set_index("seed")
    assert per_seed.loc[2, "censored"] == "below" and math.isnan(per_seed.loc[2, "eta_max"]) and per_seed.loc[2, "hi"] == 0.01
    assert per_seed.loc[3, "censored"] == "above" and per_seed.loc[3, "eta_max"] == 0.32
    assert list(tables[stability.ETA_FILE].columns) == ["task", "warmup", "warmup_steps", *stability.ETA_COLUMNS]
    summary = stability.read_table(tmp_path / stability.SUMMARY_FILE).iloc[0]
    assert (summary["n_seeds"], summary["n_censored_below"], summary["n_censored_above"]) == (5, 1, 1)
    assert summary["censored_seeds"] == "2:below 3:above"
    assert summary["estimate"] == 0.08 and summary["estimate_censored"] == ""  # ranks: <0.01, .04, .08, .08, >=.32


def test_median_of_mostly_censored_seeds_is_a_bound():
    per_seed = stability.eta_max_per_seed(stability.judge(pd.DataFrame(grid_probes([0.001, 0.001, 0.04])), ["plain"]))
    row = stability.eta_max_summary(per_seed).iloc[0]
    assert (row["estimate"], row["estimate_censored"], row["ci_low_censored"]) == (0.01, "below", "below")


def test_p_stable_counts_every_probe_of_every_seed():
    ps = stability.p_stable(stability.judge(pd.DataFrame(grid_probes([0.02, 0.04, 0.04])), ["plain"]))
    assert ps.set_index("lr").loc[[0.02, 0.04, 0.08], ["n", "n_stable"]].values.tolist() == [[3, 3], [3, 2], [3, 0]]
    assert ps.set_index("lr").loc[0.04, "p_stable"] == pytest.approx(2 / 3)


def test_comparison_resolved_only_when_the_interval_excludes_one():
    base = grid_probes([0.02, 0.02, 0.04, 0.02, 0.04])
    far = grid_probes([0.16, 0.16, 0.32, 0.16, 0.16], warmup_steps=50)
    near = grid_probes([0.02, 0.04, 0.02, 0.04, 0.02], warmup_steps=10)
    comp = stability.tables(pd.DataFrame(base + far + near), criteria=["plain"])[stability.COMPARE_FILE]
    comp = comp.set_index("warmup_steps")
    assert comp.loc[50, "ratio"] == 8 and comp.loc[50, "resolved"] and comp.loc[50, "ci_low"] > 1
    assert comp.loc[10, "ratio"] == 1 and not comp.loc[10, "resolved"]
    assert comp.loc[10, "ci_low"] <= 1 <= comp.loc[10, "ci_high"]
    assert (comp["baseline"] == "warmup=none, warmup_steps=0").all() and (comp["n_seeds_baseline"] == 5).all()


def test_two_settings_censored_below_everywhere_are_never_resolved():
    """Every seed of both settings below the grid: the ratio is undetermined, whichever way the bootstrap
    falls, so neither the estimate nor an interval edge may claim a direction."""
    base = grid_probes([0.001] * 5)
    other = grid_probes([0.001, 0.001, 0.001, 0.001, 0.04], warmup_steps=60)
    comp = stability.tables(pd.DataFrame(base + other), criteria=["plain"])[stability.COMPARE_FILE].iloc[0]
    assert not comp["resolved"]
    assert comp["ratio_censored"] == "undetermined" and comp["ci_low_censored"] == "undetermined"


def test_lr_sensitivity_on_different_grids_is_refused():
    same = pd.DataFrame(grid_probes([0.04, 0.08]) + grid_probes([0.08, 0.16], warmup_steps=10))
    sens = stability.lr_sensitivity_table(same).set_index("warmup_steps")
    assert sens.loc[0, "n_lrs"] == 6 and sens.loc[0, "n_seeds"] == 2 and (sens["loss"] == "final_eval_loss").all()
    other = pd.DataFrame(grid_probes([0.04, 0.08]) + grid_probes([0.08, 0.16], lrs=(0.01, 0.03, 0.1), warmup_steps=10))
    with pytest.raises(GridMismatch, match="one fixed grid, but .*warmup_steps=0, seed=0 has lrs \\[0.01, 0.02.*warmup_steps=10, seed=0 has \\[0.01, 0.03, 0.1\\]"):
        stability.lr_sensitivity_table(other)
    with pytest.raises(GridMismatch, match="no run at lr \\[0.02"):
        stability.lr_sensitivity_table(other, grid=[0.01, 0.02])
    # a grid common to both: the sensitivity over it, the other LRs left out
    assert stability.lr_sensitivity_table(other, grid=[0.01])["n_lrs"].tolist() == [1, 1]


def test_lr_sensitivity_matches_its_definition():
    lrs, init = [1e-3, 1e-2, 1e-1, 1.0], [2.3] * 4
    final = [1.0, 0.5, 3.0, float("nan")]
    # mean(min(final, init)) - best final = mean(1.0, 0.5, 2.3, 2.3) - 0.5
    assert stability.lr_sensitivity(lrs, final, init) == pytest.approx((1.0 + 0.5 + 2.3 + 2.3) / 4 - 0.5)
    assert stability.lr_sensitivity([1e-3, 1e-2], [2.4, 2.5], [2.3, 2.3]) == pytest.approx(0.0)


def test_probes_from_run_summaries_keep_finished_runs_only():
    df = pd.DataFrame([{**probe(0.01), "target_lr": 0.01, "seed": 0.0, "warmup_steps": 10.0},
                       {"status": runs.ERROR, "target_lr": np.nan}])
    probes = stability.probes_from_runs(df)
    assert len(probes) == 1 and probes["seed"].tolist() == [0] and probes["warmup_steps"].tolist() == [10]


def test_learned_criterion_asks_for_a_loss_below_the_declared_baseline_or_l0():
    probes = pd.DataFrame([
        probe(0.01, final=2.0, baseline_loss=2.3),   # 2.0 <= 0.9 x 2.3 = 2.07: learned
        probe(0.02, final=2.1, baseline_loss=2.3),   # plain (below l0) but not below 0.9 x the baseline
        probe(0.04, final=2.0, baseline_loss=3.0),   # a task whose baseline is higher: learned
        probe(0.08, final=1.5),                      # no baseline declared: l0 stands in (<= 0.9 x 2.3)
        probe(0.16, final=2.2),                      # no baseline, 2.2 > 0.9 x l0
        probe(0.32, runs.DIVERGED, baseline_loss=2.3),
    ])
    got = stability.judge(probes, ["learned_0.9", "learned_1", "plain"]).pivot(index="lr", columns="criterion",
                                                                              values="stable")
    assert got["learned_0.9"].tolist() == [True, False, True, True, False, False]
    assert got["learned_1"].tolist() == [True, True, True, True, True, False]
    assert got["plain"].tolist() == [True, True, True, True, True, False]
    assert stability.DEFAULT_CRITERION == "learned_0.9" and stability.DEFAULT_CRITERIA[0] == "learned_0.9"
    for bad in ("learned_0", "learned_1.5", "learned_x"):
        with pytest.raises(ValueError, match="learned_<f> with 0 < f <= 1"):
            stability.criterion(bad)


def test_baseline_of_reads_the_task_info_of_a_summary_and_probes_from_runs_keeps_it():
    assert stability.baseline_of({"task_info": {"baseline_loss": 2.3}}) == 2.3
    assert math.isnan(stability.baseline_of({"task_info": {}})) and math.isnan(stability.baseline_of(None))
    runs_df = pd.DataFrame([{"task": "toy", "seed": 0, "target_lr": 0.1, "status": runs.COMPLETED, "init_loss": 2.5,
                             "final_train_loss": 2.2, "final_eval_loss": 2.3, stability.BASELINE_COLUMN: 2.3}])
    probes = stability.probes_from_runs(runs_df, keys=["task"])
    assert probes["baseline_loss"].tolist() == [2.3]
    assert not stability.judge(probes, ["learned_0.9"], keys=["task"])["stable"].iloc[0]  # 2.2 > 2.07
