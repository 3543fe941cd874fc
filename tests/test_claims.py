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


def test_adam_untuned_runs_the_warmup_length_adam_tune_found_best():
    """The tuned arm is the T_w with the lowest median final training loss in the committed tuning runs
    (ties: the shorter), on seeds adam_untuned does not use."""
    from hydra import compose, initialize_config_dir

    from warmup_lab.paths import CONF_DIR

    tune = pd.read_csv(REPO_ROOT / "results" / "adam_tune" / "runs.csv")
    med = tune.groupby("warmup_steps")["final_train_loss"].median()
    best = int(med[med == med.min()].index.min())
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=adam_untuned/transformer"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert f"linear@{best}" in str(params.warmup_setting).split(",")
    seeds = {int(s) for s in str(params.seed).split(",")}
    assert not seeds & set(tune["seed"]) and len(seeds) >= 8
    assert {float(x) for x in str(params["optimizer.lr"]).split(",")} == set(tune["target_lr"])
    assert cfg.train.steps == int(tune["train_steps"].iloc[0])


def test_the_advise_readme_quotes_the_resnet_recheck_as_committed():
    """experiments/advise/README.md's re-check sentence against results/advise/recheck.csv, to 3 digits."""
    rc = pd.read_csv(REPO_ROOT / "results" / "advise" / "recheck.csv").set_index("lr_find")
    text = " ".join((REPO_ROOT / "experiments" / "advise" / "README.md").read_text().split())
    for row, lower in (("lr-find, linear warmup 12 (10% of T)", 11), ("lr-find, no warmup", 7)):
        r = rc.loc[row]
        assert f"x{r.ratio:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]" in text, row
        assert f"lower on {lower} of {int(r.n_seeds)} seeds" in text and r.advise_lower_on_seeds == lower
    assert rc.advise_diverged_or_failed.eq(0).all() and (rc.p_holm > 0.05).all()
    assert "neither better nor resolvably worse" in text


def test_the_advise_readme_quotes_the_resnet_ceiling_as_committed():
    """experiments/advise/README.md's ceiling sentence against results/advise/ceiling.csv, to 3 digits: no cell
    resolved below lr-find's, the lowest ratio and advise's pick as quoted."""
    c = pd.read_csv(REPO_ROOT / "results" / "advise" / "ceiling.csv")
    text = " ".join((REPO_ROOT / "experiments" / "advise" / "README.md").read_text().split())
    tested = c[c.test != "(the baseline)"]
    assert not (tested.resolved & (tested.ratio < 1)).any() and "**No cell is resolved below it**" in text
    low = tested.loc[tested.ratio.idxmin()]
    assert f"x{low.ratio:.3g} [{low.ci_low:.3g}, {low.ci_high:.3g}]" in text
    pick = c[c.label.fillna("").str.startswith("advise")].iloc[0]
    assert (f"Advise's pick (warmup {pick.warmup_steps}, LR {pick.lr:.3g}) is x{pick.ratio:.3g} "
            f"[{pick.ci_low:.3g}, {pick.ci_high:.3g}]") in text
    above = tested[tested.resolved & (tested.ratio > 1)]
    assert "Four cells are resolved above it" in text and len(above) == 4 and (above.lr == c.lr.min()).all()
    assert f"{len(c)} cells, {int(c.n_seeds.sum())} runs" in text and c.n_diverged_or_failed.eq(0).all()


def test_the_advice_quoted_in_the_readme_and_docs_is_the_committed_one():
    """README.md's char-LM answer and docs/advise.md's console block against the committed advice.md."""
    md = (REPO_ROOT / "results" / "advise" / "transformer_adamw" / "advise_60runs" / "advice.md").read_text()
    lines = [line for line in md.split("```\n")[1].splitlines() if not line.startswith("files:")]
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert f"`{lines[0]}`" in readme
    docs = (REPO_ROOT / "docs" / "advise.md").read_text()
    block = docs[docs.index("```\nadvice: "):].split("```\n")[1].splitlines()
    assert len(block) == len(lines)
    for quoted, line in zip(block, lines):  # a long line is cut to 107 characters and "..."
        assert quoted == line or (quoted.endswith("...") and line.startswith(quoted[:-3])), quoted
