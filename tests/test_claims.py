"""The committed comparison tables obey the resolution rule the READMEs cite (docs/definitions.md,
Statistics): a verdict on every row, and `resolved` only with >= 3 seeds a side and a Holm p <= 0.05."""
from __future__ import annotations

import pandas as pd
import pytest

from warmup_lab.paths import REPO_ROOT

COMPARE_TABLES = sorted([*(REPO_ROOT / "results").glob("*/eta_max_compare.csv"),
                         *(REPO_ROOT / "results").glob("*/final_loss_compare.csv")])


def test_committed_comparison_tables_exist():
    assert len(COMPARE_TABLES) >= 5, COMPARE_TABLES


@pytest.mark.parametrize("path", COMPARE_TABLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_row_is_resolved_without_three_seeds_a_side_and_holm_p(path):
    table = pd.read_csv(path)
    assert {"verdict", "resolved", "n_seeds", "n_seeds_baseline", "p_holm", "interval"} <= set(table.columns)
    assert table["verdict"].notna().all()
    assert (table["interval"].str.startswith("exact order-statistic")).all()
    resolved = table[(table["verdict"] == "resolved") | table["resolved"].astype(bool)]
    assert (resolved["verdict"] == "resolved").all() and resolved["resolved"].astype(bool).all()
    assert (resolved[["n_seeds", "n_seeds_baseline"]] >= 3).all().all(), resolved
    assert (resolved["p_holm"] <= 0.05).all(), resolved
    assert resolved["declared"].astype(bool).all(), resolved


@pytest.mark.parametrize("path", COMPARE_TABLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_identical_lr_curves_are_one_arm_and_untested(path):
    table = pd.read_csv(path)
    one_arm = table[table["one_arm"].astype(bool)]
    assert (one_arm["verdict"] == "one arm").all()
    assert one_arm["p_holm"].isna().all()
