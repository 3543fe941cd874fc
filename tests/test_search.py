"""The max-stable-LR search on synthetic objectives with a known threshold (stable iff lr <= thr)."""

import math

import pytest

from warmup_lab.search import LRSearch, aggregate, grid_lr, predicted_probes

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
    # defaults: grid step 2**0.25, bracket x4 = 8 steps, bisection of 8 steps = 3 probes, 1 check probe
    assert predicted_probes(0.01) == 3 + 3 + 1  # 1e-3 s, 4e-3 s, 1.6e-2 u
    assert predicted_probes(0.05) == 4 + 3 + 1  # ... 6.4e-2 u
    assert predicted_probes(1e-4) == 3 + 3 + 1  # 1e-3 u, 2.5e-4 u, 6.25e-5 s
    assert predicted_probes(1e-3) == 2 + 3 + 1  # 1e-3 s, 4e-3 u
    assert predicted_probes(100.0) == math.ceil(53 / 8) + 1  # stable up to the top of the range
    assert predicted_probes(1e-7) == math.ceil(40 / 8) + 1 + 1  # unstable down to min_lr, + check


def test_probes_lie_on_a_reproducible_grid():
    a, b = run(lambda lr: lr <= 0.02), run(lambda lr: lr <= 0.02)
    assert [p["lr"] for p in a["probes"]] == [p["lr"] for p in b["probes"]]
    assert all(p["lr"] == grid_lr(1e-3, RES, round(math.log(p["lr"] / 1e-3, RES))) for p in a["probes"])


def test_non_monotone_stable_above_is_flagged_and_reported():
    r = run(lambda lr: lr <= 0.01 or lr >= 0.05)  # the check probe at 4x the top lands in the stable band
    assert r["non_monotone"] and thr_ok(r["eta_max"], 0.01)
    assert [p["lr"] for p in r["non_monotone_probes"]] == [p["lr"] for p in r["probes"][-1:]]
    assert r["non_monotone_probes"][0]["stable"] is True


def test_non_monotone_with_nothing_stable_below():
    r = run(lambda lr: 3e-3 <= lr <= 5e-3)  # unstable from 1e-3 down to min_lr, stable at 4e-3
    assert r["below_min"] and r["eta_max"] is None and r["non_monotone"]
    assert r["non_monotone_probes"][0]["lr"] == pytest.approx(4e-3)


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


def test_aggregate_over_seeds():
    results = {seed: run(lambda lr, t=t: lr <= t) for seed, t in enumerate([0.01, 0.02, 0.04])}
    results[3] = run(lambda lr: lr <= 0.01 or lr >= 0.05)
    a = aggregate(results)
    vals = [r["eta_max"] for r in results.values()]
    assert a["per_seed"] == dict(enumerate(vals)) and a["n_values"] == 4
    assert a["median"] == pytest.approx(sorted(vals)[1] / 2 + sorted(vals)[2] / 2)
    assert a["geomean"] == pytest.approx(math.prod(vals) ** 0.25)
    assert (a["min"], a["max"]) == (min(vals), max(vals))
    assert a["spread_res"] == pytest.approx(math.log(max(vals) / min(vals), RES)) and a["spread_res"] == 8
    assert a["non_monotone"] and a["n_below_min"] == 0 and a["all_done"]
    b = aggregate([run(lambda lr: lr <= 0.01), run(lambda lr: False)])
    assert b["n_values"] == 1 and b["n_below_min"] == 1 and b["median"] == b["min"]
