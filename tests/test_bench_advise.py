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


def test_the_ceiling_compares_every_cell_with_lr_finds_and_holm_counts_every_cell_but_the_base():
    base = _runs([1.0, 2.0, 1.5, 1.2, 0.9, 1.1, 1.3])
    cells = {(12, 0.1): base, (0, 0.1): _runs([0.5, 1.0, 0.75, 0.6, 0.45, 0.55, 0.65]),
             (0, 0.2): _runs([1.1, 2.1, 1.4, 1.3, 1.0, 1.0, 1.4])}
    t = _mod().ceiling_table(cells, (12, 0.1), {(12, 0.1): "lr-find, linear warmup 12"}).set_index(["warmup_steps", "lr"])
    assert t.loc[(12, 0.1), "test"] == "(the baseline)" and t.loc[(12, 0.1), "ratio"] == 1.0
    assert math.isnan(t.loc[(12, 0.1), "p_holm"]) and not t.loc[(12, 0.1), "resolved"]
    lower = t.loc[(0, 0.1)]
    assert math.isclose(lower["ratio"], 0.5, rel_tol=1e-9) and lower["lower_on_seeds"] == 7
    assert math.isclose(lower["p_holm"], 2 * 2 / 2 ** 7)  # Holm over the 2 tested cells: the smallest p doubled
    assert lower["resolved"] and t.loc[(0, 0.2), "lower_on_seeds"] == 2 and not t.loc[(0, 0.2), "resolved"]
