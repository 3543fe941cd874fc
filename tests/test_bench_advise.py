"""scripts/bench_advise.py's re-check: advise against lr-find on the final training loss, paired by seed."""

import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_advise.py"


def _mod():
    spec = importlib.util.spec_from_file_location("bench_advise", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _runs(losses, status="completed"):
    return [{"seed": s, "final_train_loss": x, "status": status if math.isfinite(x) else "diverged"}
            for s, x in enumerate(losses)]


def test_a_method_lower_on_every_seed_has_a_ratio_below_one_and_the_exact_two_sided_p():
    r = _mod().paired_loss_ratio(_runs([1.0, 2.0, 1.5, 1.2, 0.9, 1.1]), _runs([0.5, 1.0, 0.75, 0.6, 0.45, 0.55]))
    assert r["paired"] and r["test"] == "Wilcoxon signed-rank (paired)"
    assert math.isclose(r["ratio"], 0.5, rel_tol=1e-9) and r["ci_high"] <= 0.5 + 1e-9
    assert math.isclose(r["p_value"], 2 / 2 ** 6)  # 6 of 6 seeds on one side: the smallest two-sided p


def test_a_diverged_run_is_a_bound_above_every_finite_loss_not_a_guessed_value():
    r = _mod().paired_loss_ratio(_runs([1.0, 1.0, 1.0, 0.5]), _runs([0.9, 0.9, 0.9, math.nan]))
    assert r["test"] == "sign test (paired; censored differences)"  # the diverged seed's size is unknown
    assert r["n_undetermined"] == 0  # but its sign is: at or above 1.0, the largest finite loss, against 0.5
    assert math.isclose(r["p_value"], 0.625)  # 3 seeds lower, 1 higher: the exact two-sided sign test
