"""The max-stable-LR search on synthetic objectives with a known threshold (stable iff lr <= thr)."""

import math

import pytest

from warmup_lab.lr_search import LRSearch, disagreement_lrs, grid_lr, predicted_probes
from warmup_lab.stability import eta_max_of

RES = 2**0.25


def run(objective, **kw):
    s = LRSearch(**kw)
    while (lr := s.next_lr()) is not None:
        s.record(lr, objective(lr))
    return s.result()


THRESHOLDS = [
    0.05, 1.7, 0.0125,  # above the start LR (1e-3)
    3e-4, 2e-5, 9.9e-4,  # below it
    1e-3, grid_lr(1e-3, RES, 8), grid_lr(1e-3, RES, -3),  # at the start LR and at grid points
    1.2e-6, 1e-6, 5e-7, 1e-9,  # at and below min_lr
    9.9, 10.0, 50.0,  # at and above max_lr
]
VARIANTS = [{}, {"bracket_factor": 2.0}, {"resolution": 2.0, "check_above": 0},
            {"start_lr": 0.37, "min_lr": 1e-4, "max_lr": 3.0, "resolution": 1.1, "check_above": 2}]


@pytest.mark.parametrize("kw", VARIANTS)
@pytest.mark.parametrize("thr", THRESHOLDS)
def test_monotone_threshold_found_within_resolution_in_predicted_probes(thr, kw):
    r = run(lambda lr: lr <= thr, **kw)
    res = kw.get("resolution", RES)
    assert r["done"] and not r["non_monotone"] and r["n_errors"] == 0
    assert r["n_probes"] == predicted_probes(thr, **kw)
    lo_range, hi_range = r["range"]
    if thr < lo_range:
        assert r["below_min"] and r["eta_max"] is None and r["hi"] == lo_range
    elif thr >= hi_range:
        assert r["above_max"] and r["eta_max"] == hi_range and r["hi"] is None
    else:
        assert not (r["below_min"] or r["above_max"])
        assert thr / res < r["eta_max"] <= thr < r["hi"]
        assert r["hi"] / r["lo"] == pytest.approx(res)
    assert max((p["lr"] for p in r["probes"] if p["stable"]), default=None) == r["eta_max"]


def test_probe_count_formula_by_hand():
    # defaults: grid step 2**0.25, bracket x4 = 8 steps, bisection of 8 steps = 3 probes, then 1 check
    # probe one grid step above the first unstable LR, unless that LR was probed already
    assert predicted_probes(0.01) == 3 + 3 + 1  # 1e-3 s, 4e-3 s, 1.6e-2 u; bisect 12 s 14 u 13 s; check 15
    assert predicted_probes(0.05) == 4 + 3 + 0  # ... 6.4e-2 u (k=24); bisect 20 22 23; check 24 = probed
    assert predicted_probes(1e-4) == 3 + 3 + 0  # 1e-3 u, 2.5e-4 u, 6.25e-5 s; bisect -12 -14 -13; -12 probed
    assert predicted_probes(1e-3) == 2 + 3 + 0  # 1e-3 s, 4e-3 u; bisect 4 2 1 u; check 2 = probed
    assert predicted_probes(100.0) == math.ceil(53 / 8) + 1  # stable up to the top of the range
    assert predicted_probes(1e-7) == math.ceil(40 / 8) + 1 + 1  # unstable down to min_lr, + check above it


def test_probes_lie_on_a_reproducible_grid():
    a, b = run(lambda lr: lr <= 0.02), run(lambda lr: lr <= 0.02)
    assert [p["lr"] for p in a["probes"]] == [p["lr"] for p in b["probes"]]
    assert all(p["lr"] == grid_lr(1e-3, RES, round(math.log(p["lr"] / 1e-3, RES))) for p in a["probes"])


def test_check_probe_sits_just_above_the_first_unstable_lr_and_sees_non_monotonicity():
    # thr 0.01: lo = lr(13) = 9.5e-3, hi = lr(14) = 1.13e-2; the check is lr(15) = 1.35e-2, stable here
    r = run(lambda lr: lr <= 0.01 or 0.0125 <= lr <= 0.014)
    assert r["non_monotone"] and thr_ok(r["eta_max"], 0.01)
    assert r["probes"][-1]["lr"] == pytest.approx(grid_lr(1e-3, RES, 15)) and r["probes"][-1]["stable"]
    assert r["non_monotone_probes"] == r["probes"][-1:]


def test_unstable_below_every_stable_lr_is_flagged_not_an_edge():
    r = run(lambda lr: 1.3e-6 <= lr <= 1.5e-6)  # unstable from 1e-3 down to min_lr; the check above is stable
    lowest = r["range"][0]
    # hi is the next probed LR above: the bracket point 3.9e-6, not bisected (the search took it as unstable)
    assert r["eta_max"] == pytest.approx(lowest * RES) and r["hi"] == pytest.approx(1e-3 / 4**4)
    assert r["non_monotone"] and not r["below_min"] and r["censored"] == ""
    assert [p["lr"] for p in r["non_monotone_probes"]] == [lowest]
    r = run(lambda lr: False)
    assert r["below_min"] and r["censored"] == "below" and r["eta_max"] is None and r["hi"] == lowest


def test_search_result_is_the_stability_rule_on_its_probes():
    for objective in (lambda lr: lr <= 0.02, lambda lr: lr <= 0.01 or 0.0125 <= lr <= 0.014, lambda lr: False):
        r = run(objective)
        rule = eta_max_of([p["lr"] for p in r["probes"]], [p["stable"] for p in r["probes"]])
        assert (r["eta_max"], r["censored"], r["non_monotone"]) == (
            None if math.isnan(rule["eta_max"]) else rule["eta_max"], rule["censored"], rule["non_monotone"])


def test_disagreeing_seeds_are_probed_at_the_median_seeds_edge():
    seeds = [run(lambda lr, t=t: lr <= t) for t in (0.01, 0.02, 0.04)]
    extra = disagreement_lrs(seeds)
    mid = seeds[1]  # the median seed's bracket: lo = 0.019, hi = 0.023
    assert extra[1] == [] and extra[0] == extra[2] == [mid["lo"], mid["hi"]]
    assert disagreement_lrs([seeds[0], run(lambda lr: lr <= 0.01)]) == [[], []]  # agreeing seeds: no extra probe
    s = LRSearch()
    while (lr := s.next_lr()) is not None:
        s.record(lr, lr <= 0.01)
    s.probe_also(extra[0])
    asked = []
    while (lr := s.next_lr()) is not None:
        asked.append(lr)
        s.record(lr, lr <= 0.01)
    assert asked == extra[0] and s.result()["eta_max"] == seeds[0]["eta_max"]


def thr_ok(eta, thr, res=RES):
    return eta is not None and thr / res < eta <= thr


def test_error_probe_retried_then_counted_unstable():
    seen = {}

    def flaky(lr):  # errs once at every LR > 0.02, then answers
        seen[lr] = seen.get(lr, 0) + 1
        return None if lr > 0.02 and seen[lr] == 1 else lr <= 0.03

    r = run(flaky)
    assert thr_ok(r["eta_max"], 0.03) and r["n_errors"] > 0 and not r["errors_as_unstable"]
    assert r["n_probes"] == predicted_probes(0.03) + r["n_errors"]

    r = run(lambda lr: None if lr > 0.02 else True)  # always errs above 0.02: unstable after 1 retry
    assert thr_ok(r["eta_max"], 0.02) and r["errors_as_unstable"] and not r["non_monotone"]
    assert r["n_probes"] == predicted_probes(0.02) + len(r["errors_as_unstable"])  # one retry each


def test_record_must_answer_the_pending_probe():
    s = LRSearch()
    with pytest.raises(ValueError):
        s.record(0.5, True)
    with pytest.raises(ValueError):
        LRSearch(start_lr=100.0)


@pytest.mark.parametrize("thr", THRESHOLDS)
def test_a_search_started_from_another_seeds_eta_max_finds_the_same_edge(thr):
    hint = run(lambda lr: lr <= 0.02)["eta_max"]
    alone, hinted = run(lambda lr: lr <= thr), run(lambda lr: lr <= thr, hint=hint)
    assert (hinted["eta_max"], hinted["hi"], hinted["censored"]) == (alone["eta_max"], alone["hi"], alone["censored"])


def test_a_seed_that_agrees_with_the_hint_costs_two_probes_and_the_check():
    hint = run(lambda lr: lr <= 0.02)
    agree = run(lambda lr: lr <= 0.02, hint=hint["eta_max"])
    assert agree["n_probes"] == 2 + 1 < hint["n_probes"]
    assert [p["lr"] for p in agree["probes"][:2]] == [hint["lo"], hint["hi"]]


def test_budget_admits_a_round_only_when_it_fits():
    from warmup_lab.lr_search import Budget

    runs_only = Budget(max_probes=10)
    assert runs_only.allows(10) and not runs_only.allows(11)
    for _ in range(6):
        runs_only.spend(2.0)
    assert runs_only.allows(4) and not runs_only.allows(5)
    assert runs_only.as_dict() == {"probes": 6, "core_s": 12.0, "max_probes": 10, "max_core_s": None}
    cost = Budget(max_core_s=10.0)
    assert cost.allows(100)  # nothing measured yet: the first round always starts
    cost.spend(3.0)
    cost.spend(None)  # a probe without a summary costs what we cannot measure: nothing
    assert cost.allows(4) and not cost.allows(5)  # 3 + 4 x 1.5 = 9 <= 10 < 3 + 5 x 1.5
    assert "2 runs, 3 of 10 core-s" == cost.text()
    for bad in ({"max_probes": 0}, {"max_core_s": -1.0}):
        with pytest.raises(ValueError, match="must be"):
            Budget(**bad)
