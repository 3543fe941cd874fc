"""warmup_lab.stability on crafted probes: criteria, the eta_max rule, statistics over seeds, LR sensitivity."""

import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import open_dict

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


def test_median_interval_is_the_exact_order_statistic_interval_by_brute_force():
    """For n seeds, the coverage of [x_(k), x_(n+1-k)] is the share of the 2^n below/above patterns of the seeds
    around the true median that put it inside: count them one by one, then check the table's edges."""
    import itertools

    for n in range(1, 13):
        k, coverage = stability.median_rank(n, 0.9)
        inside = lambda k: sum(k <= sum(p) <= n - k for p in itertools.product((0, 1), repeat=n)) / 2 ** n
        assert coverage == pytest.approx(inside(k))
        assert coverage >= 0.9 or k == 1
        assert k == 1 or inside(k + 1) < 0.9 or k + 1 > (n + 1) // 2
    per_seed = stability.eta_max_per_seed(stability.judge(pd.DataFrame(grid_probes([0.02, 0.04, 0.04, 0.08, 0.16])),
                                                          ["plain"]))
    row = stability.eta_max_summary(per_seed).iloc[0]
    assert (row["estimate"], row["ci_low"], row["ci_high"]) == (0.04, 0.02, 0.16)  # 5 seeds: the seed range
    assert row["ci_coverage"] == pytest.approx(1 - 2 / 32) and row["interval"] == "exact order-statistic"
    eight = stability.eta_max_per_seed(stability.judge(pd.DataFrame(grid_probes(
        [0.01, 0.02, 0.02, 0.04, 0.04, 0.08, 0.16, 0.32])), ["plain"]))
    row = stability.eta_max_summary(eight).iloc[0]
    assert (row["ci_low"], row["ci_high"]) == (0.02, 0.16) and row["ci_coverage"] == pytest.approx(1 - 2 * 9 / 256)


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


def test_comparison_is_resolved_only_when_declared_with_enough_seeds_and_small_holm_p():
    base = grid_probes([0.02, 0.02, 0.04, 0.02, 0.04, 0.02, 0.02, 0.02])
    far = grid_probes([0.16] * 8, warmup_steps=50)
    near = grid_probes([0.02, 0.04, 0.02, 0.04, 0.02, 0.02, 0.04, 0.04], warmup_steps=10)
    probes = pd.DataFrame(base + far + near)
    comp = stability.tables(probes, criteria=["plain"])[stability.COMPARE_FILE].set_index("warmup_steps")
    assert (comp["verdict"] == "exploratory").all() and not comp["resolved"].any()  # nothing declared
    pairs = stability.Declared(pairs=tuple((tuple(sorted(stability.parse_setting(a).items())),
                                            tuple(sorted(stability.parse_setting(b).items())))
                                           for a, b in [("none@0", "linear@50"), ("none@0", "linear@10")]))
    comp = stability.tables(probes, criteria=["plain"], declared=pairs)[stability.COMPARE_FILE].set_index("warmup_steps")
    assert comp["paired"].all() and (comp["test"] == "Wilcoxon signed-rank (paired)").all()
    assert comp.loc[50, "ratio"] == 8 and comp.loc[50, "ci_low"] > 1 and comp.loc[50, "verdict"] == "resolved"
    assert comp.loc[50, "p_value"] == pytest.approx(2 / 256) and comp.loc[50, "p_holm"] == pytest.approx(4 / 256)
    assert 0.5 < comp.loc[10, "ratio"] < 2 and comp.loc[10, "verdict"] == "not resolved"
    assert comp.loc[10, "ci_low"] <= 1 <= comp.loc[10, "ci_high"]
    assert (comp["baseline"] == "warmup=none, warmup_steps=0").all() and (comp["n_seeds_baseline"] == 8).all()
    # two seeds a side: never resolved, whatever the p
    few = pd.DataFrame(grid_probes([0.02, 0.02]) + grid_probes([0.32, 0.32], warmup_steps=50))
    row = stability.tables(few, criteria=["plain"], declared=pairs)[stability.COMPARE_FILE].iloc[0]
    assert row["verdict"] == "too few seeds" and not row["resolved"]


def test_at_one_lr_a_seed_stable_with_one_setting_and_not_the_other_has_a_known_sign():
    """A one-LR experiment: 'below' (nothing stable at x) is strictly under '>= x' (stable at x), though both
    sit at x; only bounds pointing the same way are undetermined."""
    base = grid_probes([0.01] * 6 + [0.08] * 2, lrs=(0.04,))                   # seeds 6, 7 stable at 0.04
    warm = grid_probes([0.08] * 8, lrs=(0.04,), warmup_steps=20)               # every seed stable
    row = stability.tables(pd.DataFrame(base + warm), criteria=["plain"])[stability.COMPARE_FILE].iloc[0]
    assert row["test"] == "sign test (paired; censored differences)"
    assert row["n_undetermined"] == 2 and row["p_value"] == pytest.approx(2 / 2**6)  # 6 known +, 2 both ">="


def test_two_settings_censored_below_everywhere_are_never_resolved():
    """Every seed of both settings below the grid: the ratio is undetermined, whichever way the order statistics
    fall, so neither the estimate nor an interval edge may claim a direction."""
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


def _brute_rank_sum_p(a, b):
    """Two-sided p of the rank-sum statistic by listing every relabelling of the pooled values."""
    import itertools

    pooled = list(a) + list(b)
    ranks = {v: np.mean([i + 1 for i, w in enumerate(sorted(pooled)) if w == v]) for v in pooled}
    mean = len(b) * (len(pooled) + 1) / 2
    obs = abs(sum(ranks[v] for v in b) - mean)
    draws = [abs(sum(ranks[pooled[i]] for i in c) - mean) for c in itertools.combinations(range(len(pooled)), len(b))]
    return sum(d >= obs - 1e-9 for d in draws) / len(draws)


def _brute_signed_rank_p(d):
    import itertools

    d = [x for x in d if x != 0]
    absd = [abs(x) for x in d]
    ranks = [np.mean([j + 1 for j, w in enumerate(sorted(absd)) if w == v]) for v in absd]
    total = sum(ranks)
    obs = abs(2 * sum(r for r, x in zip(ranks, d) if x > 0) - total)
    flips = [abs(2 * sum(r for r, s in zip(ranks, signs) if s) - total) for signs in itertools.product((0, 1), repeat=len(d))]
    return sum(f >= obs - 1e-9 for f in flips) / len(flips)


@pytest.mark.parametrize("a,b", [([1, 2, 3], [4, 5, 6]), ([1, 2, 2, 3, 5], [2, 3, 4, 4, 6]),
                                 ([0.1, 0.2, 0.2, 0.4], [0.2, 0.2, 0.4, 0.8, 0.8, 0.8]), ([3, 1, 2], [2, 2, 1])])
def test_exact_tests_match_brute_force_enumeration(a, b):
    got = stability.mann_whitney_exact(np.array(a, float), np.array(b, float))
    assert got == pytest.approx(_brute_rank_sum_p(a, b))
    d = np.array(b[:len(a)], float) - np.array(a[:len(b)], float)
    assert stability.signed_rank_exact(d) == pytest.approx(_brute_signed_rank_p(d.tolist()))
    scipy_stats = pytest.importorskip("scipy.stats")
    if len(set(a + b)) == len(a + b):  # scipy's exact distribution assumes no ties
        assert got == pytest.approx(scipy_stats.mannwhitneyu(b, a, method="exact").pvalue)


def test_holm_matches_the_step_down_procedure_it_abbreviates():
    """Holm's adjusted p of H_i = the smallest alpha at which the step-down procedure (reject the smallest p
    while p_(j) <= alpha / (m - j)) rejects H_i: found by trying every candidate alpha."""
    p = [0.01, 0.04, 0.03, 0.005, math.nan, 0.2]
    family = [x for x in p if not math.isnan(x)]
    m = len(family)

    def rejected(alpha):
        out = set()
        for j, x in enumerate(sorted(family)):
            if x > alpha / (m - j):
                break
            out.add(x)
        return out

    candidates = sorted({min(1.0, x * c) for x in family for c in range(1, m + 1)} | {1.0})
    want = [math.nan if math.isnan(x) else min(a for a in candidates if x in rejected(a)) for x in p]
    got = stability.holm(p)
    assert np.allclose(got, want, equal_nan=True)
    assert got.tolist()[:4] == pytest.approx([0.04, 0.09, 0.09, 0.025])  # m = 5: 4 x .01, 3 x .03, 2 x .04 < .09, 5 x .005


def test_paired_by_seed_only_when_the_settings_share_their_seeds():
    a = pd.DataFrame(grid_probes([0.02, 0.04, 0.08, 0.02, 0.04]))
    b_same = pd.DataFrame(grid_probes([0.04, 0.08, 0.16, 0.04, 0.08], warmup_steps=30))
    b_other = b_same.assign(seed=b_same["seed"] + 10)
    per = lambda df: stability.eta_max_per_seed(stability.judge(df, ["plain"]))
    paired, unpaired = stability.ratio(per(a), per(b_same)), stability.ratio(per(a), per(b_other))
    assert paired["paired"] and paired["test"].startswith("Wilcoxon") and paired["p_value"] == pytest.approx(2 / 32)
    assert not unpaired["paired"] and unpaired["test"].startswith("Mann-Whitney")
    va, vb = np.log([0.02, 0.04, 0.08, 0.02, 0.04]), np.log([0.04, 0.08, 0.16, 0.04, 0.08])
    assert unpaired["p_value"] == pytest.approx(_brute_rank_sum_p(np.round(va, 9).tolist(), np.round(vb, 9).tolist()))
    # the paired shift is exactly x2 on every seed: estimate and both interval edges
    assert (paired["ratio"], paired["ci_low"], paired["ci_high"]) == (2, 2, 2)
    # unpaired: the Hodges-Lehmann interval holds the pairwise ratios between its order statistics
    ratios = sorted(np.exp(vb[None, :] - va[:, None]).ravel())
    assert ratios[0] <= unpaired["ci_low"] <= unpaired["ratio"] <= unpaired["ci_high"] <= ratios[-1]


def test_lr50_of_a_logistic_model_recovers_the_true_midpoint():
    """20 synthetic studies (15 LRs x 40 runs, P(stable) logistic in log LR with midpoint 0.1): each estimate
    within 15%, and the 90% profile interval holds the truth in most of them."""
    lrs = np.repeat(np.exp(np.linspace(np.log(0.01), np.log(1.0), 15)), 40)
    true50, slope, covered = 0.1, -3.0, 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        stable = rng.random(len(lrs)) < 1 / (1 + np.exp(-slope * (np.log(lrs) - np.log(true50))))
        got = stability.lr50(lrs, stable)
        assert got["lr50"] == pytest.approx(true50, rel=0.15)
        assert got["lr50_low"] < got["lr50"] < got["lr50_high"] < 2 * got["lr50_low"]
        covered += got["lr50_low"] < true50 < got["lr50_high"]
    assert covered >= 14  # P(Binomial(20, 0.9) < 14) = 0.002
    # separated outcomes (every seed stable up to 0.04, unstable above): finite, between the two LRs
    sep = stability.lr50([0.01, 0.02, 0.04, 0.08, 0.16] * 3, [True, True, True, False, False] * 3)
    assert 0.04 < sep["lr50"] < 0.08 and sep["lr50_low"] < sep["lr50"] < sep["lr50_high"]
    assert stability.lr50([0.01, 0.02], [True, True])["lr50_censored"] == "above"


def test_identical_lr_curves_are_one_arm_and_not_compared():
    ramp = {0.1: np.linspace(0, 0.1, 20), 0.2: np.linspace(0, 0.2, 20)}
    curves = {"linear@10": ramp, "untuned_linear@10": {k: v.copy() for k, v in ramp.items()},
              "none@0": {0.1: np.full(20, 0.1)}}
    assert stability.one_arm_pairs(curves) == {frozenset(("linear@10", "untuned_linear@10"))}
    probes = pd.DataFrame(grid_probes([0.02] * 4, warmup_steps=10) +
                          [{**p, "warmup": "untuned_linear"} for p in grid_probes([0.04] * 4, warmup_steps=10)])
    keys = stability.setting_keys(probes)
    ids = [stability.setting_id({"task": "toy", "warmup": w, "warmup_steps": 10}, keys) for w in ("linear", "untuned_linear")]
    pair = ((("warmup", "linear"), ("warmup_steps", 10)), (("warmup", "untuned_linear"), ("warmup_steps", 10)))
    comp = stability.tables(probes, keys, ["plain"], declared=stability.Declared(pairs=(pair,)),
                            one_arm={frozenset(ids)})[stability.COMPARE_FILE].iloc[0]
    assert comp["verdict"] == "one arm" and comp["one_arm"] and math.isnan(comp["p_value"]) and not comp["resolved"]


def test_declared_comparisons_and_selection_are_read_from_the_preset(tmp_path):
    folder = tmp_path / "experiment" / "toy"
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text("# @package _global_\ncomparisons:\n  - [none@0, cosine@30]\nselected_from: warmup_length\n")
    (folder / "b.yaml").write_text("comparisons: [[none@0, cosine@30], [linear@30, constant@30@0.1]]\n")
    got = stability.declared("toy", tmp_path)
    assert got.selected_from == ("warmup_length",) and len(got.pairs) == 2
    assert dict(got.pairs[1][1]) == {"warmup": "constant", "warmup_steps": 30}
    (folder / "c.yaml").write_text("comparisons: [[none, cosine@30]]\n")
    with pytest.raises(ValueError, match="'none' is not a warmup setting; write shape@T_w"):
        stability.declared("toy", tmp_path)


def test_a_declared_pair_may_differ_in_more_than_warmup_and_baselines_stay_within_it(tmp_path):
    """Post-LN vs Pre-LN: a pair named by {norm, warmup} is compared across norm, paired by seed and in the
    same Holm family; each warmup is still compared with no warmup of its own norm only."""
    def normed(thresholds, norm, warmup_steps=0):
        return [{**p, "norm": norm} for p in grid_probes(thresholds, warmup_steps=warmup_steps)]
    probes = pd.DataFrame(normed([0.02] * 8, "post") + normed([0.08] * 8, "post", 20)
                          + normed([0.16] * 8, "pre") + normed([0.32] * 8, "pre", 20))
    folder = tmp_path / "experiment" / "ln"
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text("comparisons:\n  - [{norm: post, warmup: none@0}, {norm: post, warmup: linear@20}]\n"
                                   "  - [{norm: post, warmup: none@0}, {norm: pre, warmup: none@0}]\n")
    found = stability.declared("ln", tmp_path)
    keys = stability.setting_keys(probes)
    ids = [stability.setting_id({"task": "toy", "norm": n, "warmup": "none", "warmup_steps": 0}, keys)
           for n in ("post", "pre")]  # the same (constant) LR curve: still two arms, the norms differ
    comp = stability.tables(probes, criteria=["plain"], declared=found,
                            one_arm={frozenset(ids)})[stability.COMPARE_FILE]
    got = {(r["baseline"], r["norm"], r["warmup_steps"]): r for _, r in comp.iterrows()}
    assert set(got) == {("norm=post, warmup=none, warmup_steps=0", "post", 20),   # declared
                        ("norm=pre, warmup=none, warmup_steps=0", "pre", 20),     # automatic, within pre
                        ("norm=post, warmup=none, warmup_steps=0", "pre", 0)}     # declared, across norm
    across = got[("norm=post, warmup=none, warmup_steps=0", "pre", 0)]
    assert across["ratio"] == 8 and across["paired"] and across["declared"] and across["verdict"] == "resolved"
    assert across["p_holm"] == pytest.approx(2 * 2 / 256)  # Holm over the two declared pairs
    assert got[("norm=pre, warmup=none, warmup_steps=0", "pre", 20)]["verdict"] == "exploratory"
    from warmup_lab.report import answer_section
    lines = [m for m in answer_section(comp.assign(criterion="learned_0.9"), None) if m.startswith("- ")]
    assert any(m.startswith("- toy: eta_max (learned_0.9) of norm=pre none@0 / norm=post none@0: ") for m in lines)
    (folder / "a.yaml").write_text("comparisons: [[{norm: post}, {norm: pre, warmup: none@0}]]\n")
    with pytest.raises(ValueError, match="is not a setting; write e.g. {norm: post, warmup: none@0}"):
        stability.declared("ln", tmp_path)
    (folder / "a.yaml").write_text("comparisons: [[{depth: 6, warmup: none@0}, {norm: pre, warmup: none@0}]]\n")
    with pytest.raises(ValueError, match="'depth': 6"):
        stability.declared("ln", tmp_path)


def test_a_claim_on_seeds_its_lr_was_chosen_from_is_flagged():
    base, other = grid_probes([0.02] * 4), grid_probes([0.16] * 4, warmup_steps=50)
    source = pd.DataFrame([{"task": "toy", "seed": s} for s in (0, 1, 9)])
    pair = ((("warmup", "none"), ("warmup_steps", 0)), (("warmup", "linear"), ("warmup_steps", 50)))
    comp = stability.tables(pd.DataFrame(base + other), criteria=["plain"], declared=stability.Declared(pairs=(pair,)),
                            source_runs=source)[stability.COMPARE_FILE].iloc[0]
    assert comp["reused_seeds"] == "0 1" and comp["verdict"] == "seeds reused" and not comp["resolved"]


def test_non_finite_losses_do_not_break_the_tables():
    probes = pd.DataFrame(grid_probes([0.04, 0.08, 0.04]) + [probe(0.01, final=math.inf, seed=5),
                                                              probe(0.02, final=math.nan, seed=5)])
    t = stability.tables(probes, criteria=["plain", "loss_frac_0.5", "near_best_2"])
    assert set(t[stability.ETA_FILE]["seed"]) == {0, 1, 2, 5}
    assert stability.lr_sensitivity_table(probes[probes["seed"] != 5]).notna().any().any()


def test_a_preset_s_declarations_do_not_change_its_runs_config_hash():
    from hydra import compose, initialize_config_dir

    from warmup_lab.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=warmup_ablation/resnet", "seed=0"])
    assert list(cfg.comparisons[0]) == ["none@0", "constant@30@0.1"] and list(cfg.selected_from) == ["warmup_length"]
    bare = cfg.copy()
    with open_dict(bare):
        del bare["comparisons"], bare["selected_from"]
    assert runs.config_hash(cfg) == runs.config_hash(bare)
    assert len(stability.declared("warmup_ablation").pairs) == 4


def _loss_probes(losses_a, losses_b, lr=0.8):
    rows = []
    for setting, losses in ((("none", 0), losses_a), (("linear", 30), losses_b)):
        for seed, loss in enumerate(losses):
            rows.append({"task": "digits", "warmup": setting[0], "warmup_steps": setting[1], "seed": seed, "lr": lr,
                         "status": "diverged" if not np.isfinite(loss) else "completed", "init_loss": 2.3,
                         "final_train_loss": loss, "final_eval_loss": loss, "baseline_loss": 2.3})
    return pd.DataFrame(rows)


def test_final_loss_is_compared_on_the_declared_pairs_paired_by_seed_with_a_diverged_run_as_a_bound():
    declared = stability.Declared(pairs=((tuple(sorted({"warmup": "none", "warmup_steps": 0}.items())),
                                          tuple(sorted({"warmup": "linear", "warmup_steps": 30}.items()))),),
                                  compare_on=("final_train_loss",))
    a = [1.0, 1.2, 0.9, float("nan"), 1.1, 1.3, 1.0, 0.95]  # seed 3 diverged without warmup
    b = [x * 0.5 if np.isfinite(x) else 0.4 for x in a]
    comp = stability.final_loss_compare(_loss_probes(a, b), ["task", "warmup", "warmup_steps"], declared=declared)
    (row,) = comp.to_dict("records")
    assert row["lr"] == 0.8 and row["criterion"] == "final_train_loss" and row["paired"]
    # every seed lower with warmup: the smallest exact two-sided signed-rank p with 8 pairs, 2 / 2^8
    assert row["p_value"] == pytest.approx(2 / 256) and row["verdict"] == "resolved"
    assert row["ratio"] < 1 and row["ratio_censored"] in ("", "below")
    # the diverged seed is not guessed: it ranks above every finite loss, and dropping the warmup arm's
    # advantage on one seed changes the test
    b2 = list(b)
    b2[0] = 2.0
    (row2,) = stability.final_loss_compare(_loss_probes(a, b2), ["task", "warmup", "warmup_steps"],
                                           declared=declared).to_dict("records")
    assert row2["p_value"] > row["p_value"]


def test_compare_on_names_a_known_measure(tmp_path):
    exp = tmp_path / "experiment"
    exp.mkdir()
    (exp / "x.yaml").write_text("comparisons: [[none@0, linear@30]]\ncompare_on: [final_train_loss]\n")
    assert stability.declared("x", tmp_path).compare_on == ("final_train_loss",)
    (exp / "y.yaml").write_text("comparisons: [[none@0, linear@30]]\ncompare_on: accuracy\n")
    with pytest.raises(ValueError, match="compare_on: 'accuracy'"):
        stability.declared("y", tmp_path)
    (exp / "z.yaml").write_text("comparisons: [[none@0, linear@30]]\n")
    assert stability.declared("z", tmp_path).compare_on == ("eta_max",)


def test_the_best_lr_is_the_lowest_median_final_loss_and_says_whether_it_is_inside_the_grid():
    rows = []
    for seed in range(3):
        for lr, loss in ((0.1, 1.0), (0.2, 0.6), (0.4, 0.5 + 0.2 * (seed == 0)), (0.8, 0.55), (1.6, float("nan"))):
            rows.append({"task": "digits", "warmup": "none", "warmup_steps": 0, "seed": seed, "lr": lr,
                         "status": "diverged" if lr == 1.6 else "completed", "final_train_loss": loss})
    (row,) = stability.best_lr_table(pd.DataFrame(rows), ["task", "warmup", "warmup_steps"]).to_dict("records")
    assert row["best_lr"] == 0.4 and row["median_final_train_loss"] == 0.5  # seed 0's 0.7 is not the median
    assert (row["n_lrs_below"], row["n_lrs_above"], row["inside"]) == (2, 2, True)
    assert (row["seed_best_lr_min"], row["seed_best_lr_max"]) == (0.4, 0.8)  # seed 0 is best at 0.8
    edge = pd.DataFrame(rows).query("lr >= 0.4")
    (row,) = stability.best_lr_table(edge, ["task", "warmup", "warmup_steps"]).to_dict("records")
    assert row["best_lr"] == 0.4 and not row["inside"]  # the optimum at the grid's floor is not inside
