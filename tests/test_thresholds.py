"""The threshold sweep (warmup_lab.thresholds) on a runs frame whose answer is known, and on the committed data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from warmup_lab import runs, stability, thresholds
from warmup_lab.paths import REPO_ROOT
from warmup_lab.report import build_report

L0, BASELINE = 2.0, 1.2  # the declared bar: 1.2 / 2.0 = 0.6 l0
LRS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
SEEDS = range(8)  # 8 paired seeds: the smallest exact two-sided p is 2/2^8, under 0.05 after Holm over 2
# Final train loss as a fraction of l0 at each LR. Warmup 60 lowers it at 0.08 and 0.16 only: under loss_frac_f
# it raises eta_max for f in 0.40-0.80 (x2 at 0.40, x4 at 0.45, x2 from 0.50 to 0.80) and nowhere else.
# Warmup 10 is no warmup's curve.
CURVES = {0: (0.22, 0.27, 0.32, 0.47, 0.82, 0.92), 10: (0.22, 0.27, 0.32, 0.47, 0.82, 0.92),
          60: (0.22, 0.27, 0.32, 0.37, 0.42, 0.92)}
EXPECTED = {0.25: 1.0, 0.3: 1.0, 0.35: 1.0, 0.4: 2.0, 0.45: 4.0, **dict.fromkeys((0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8), 2.0),
            0.85: 1.0, 0.9: 1.0}


def runs_frame() -> pd.DataFrame:
    """report.load_runs-like rows (what probes_from_runs reads), every run completed."""
    return pd.DataFrame([
        {"task": "toy", "model": "mlp", "optimizer": "sgd", "warmup": "linear" if tw else "none", "warmup_steps": tw,
         "seed": seed, "target_lr": lr, "status": runs.COMPLETED, "init_loss": L0,
         "final_train_loss": L0 * (frac + 0.001 * seed), "final_eval_loss": L0 * frac,
         stability.BASELINE_COLUMN: BASELINE, "experiment": "toy_thresholds", "steps_run": 100, "diverged_step": None}
        for tw, curve in CURVES.items() for seed in SEEDS for lr, frac in zip(LRS, curve)])


def test_sweep_finds_the_band_where_warmup_raises_eta_max_and_resolves_only_there(tmp_path: Path) -> None:
    res = runs_frame()
    probes = stability.probes_from_runs(res)
    keys = stability.setting_keys(probes)
    declared = stability.Declared(pairs=tuple(
        (tuple(sorted({"warmup": "none", "warmup_steps": 0}.items())), tuple(sorted({"warmup": "linear", "warmup_steps": t}.items())))
        for t in (10, 60)))
    table = thresholds.sweep(probes, keys, res, declared)
    assert len(table) == 2 * len(thresholds.THRESHOLDS)
    assert list(table.columns[-len(thresholds.COLUMNS):]) == thresholds.COLUMNS
    w60 = table[table["warmup_steps"] == 60].set_index("threshold")
    w10 = table[table["warmup_steps"] == 10].set_index("threshold")
    for f, want in EXPECTED.items():
        assert w60.loc[f, "ratio"] == pytest.approx(want) and w60.loc[f, "ratio_censored"] == "", f
        assert w10.loc[f, "ratio"] == pytest.approx(1.0), f
    # No LR stable (f <= 0.20) or every LR stable (0.95): both sides censored alike, the ratio undetermined.
    for f in (0.1, 0.15, 0.2, 0.95):
        assert pd.isna(w60.loc[f, "ratio"]) and w60.loc[f, "ratio_censored"] == "undetermined", f
    resolved = w60.index[w60["verdict"] == "resolved"].tolist()
    assert resolved == [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]
    # Holm over the arm's two declared comparisons at each threshold: 2 x (2 / 2^8).
    assert w60.loc[0.6, "p_value"] == pytest.approx(2 / 2 ** 8) and w60.loc[0.6, "p_holm"] == pytest.approx(4 / 2 ** 8)
    assert (w10["verdict"] == "not resolved").all()
    assert table["bar"].tolist() == pytest.approx([0.6] * len(table))
    assert (table["bar_source"] == "best constant predictor").all()

    lines = thresholds.summary_lines(table, keys)
    assert len(lines) == 1 and "bar: best constant predictor = 0.60 l0" in lines[0]
    assert "ratio > 1 for f in 0.40-0.80 (9 of 18 thresholds)" in lines[0]
    assert "at f = 0.60 (nearest the bar): 2 [" in lines[0] and "resolved: linear@60 at f in 0.40-0.80" in lines[0]

    drawn = thresholds.figure(table, keys, tmp_path, n_lrs=len(LRS))
    assert drawn.path == tmp_path / thresholds.FIGURE and drawn.path.stat().st_size > 10_000
    v = drawn.values
    assert len(v) == len(table)  # a mark per row: undetermined ratios as x at the bottom
    assert set(v.loc[v["filled"], "threshold"]) == set(resolved) and (v.loc[v["filled"], "setting"] == "linear@60").all()
    assert (v.loc[v["ratio"].isna(), "kind"] == "undetermined").all()


def test_figure_is_skipped_with_a_reason_without_no_warmup_or_with_too_few_lrs(tmp_path: Path) -> None:
    res = runs_frame()
    no_base = res[res["warmup_steps"] > 0]
    probes = stability.probes_from_runs(no_base)
    keys = stability.setting_keys(probes)
    md, table = thresholds.section(probes, keys, no_base, None, tmp_path)
    assert table.empty and any("_Figure skipped: no setting with warmup_steps = 0" in line for line in md)
    two = res[res["target_lr"] <= 0.02]
    probes = stability.probes_from_runs(two)
    md, _ = thresholds.section(probes, keys, two, None, tmp_path)
    assert any("_Figure skipped: 2 target LR(s); the threshold sweep needs at least 3._" in line for line in md)
    assert not (tmp_path / thresholds.FIGURE).exists()


def test_report_writes_the_sweep_from_a_runs_table(tmp_path: Path) -> None:
    src = tmp_path / "committed"
    src.mkdir()
    runs_frame().to_csv(src / "runs.csv", index=False)
    out = build_report([src], tmp_path / "out")
    table = stability.read_table(out / thresholds.FILE)
    assert len(table) == 2 * len(thresholds.THRESHOLDS) and set(table["verdict"]) == {"exploratory"}  # no preset
    assert table["threshold"].tolist()[:3] == [0.1, 0.15, 0.2]
    md = (out / "report.md").read_text()
    assert "## Threshold sweep" in md and "![threshold_sweep](threshold_sweep.png)" in md
    assert (out / thresholds.FIGURE).stat().st_size > 10_000
    again = build_report([out], tmp_path / "again")  # from its own files: the same bytes
    assert (again / thresholds.FILE).read_bytes() == (out / thresholds.FILE).read_bytes()


def test_report_on_the_committed_warmup_length_results(tmp_path: Path) -> None:
    """Whatever runs results/warmup_length holds: the sweep covers every arm and setting, and is drawn."""
    committed = REPO_ROOT / "results" / "warmup_length"
    out = build_report([committed], tmp_path / "out")
    table = stability.read_table(out / thresholds.FILE)
    pairs = table[["task", "warmup", "warmup_steps", "baseline"]].drop_duplicates()  # a row per pair and bar
    assert len(table) == len(pairs) * len(thresholds.THRESHOLDS)
    assert set(table["verdict"]) <= set(stability.VERDICTS)
    assert (out / thresholds.FIGURE).is_file()
    md = (out / "report.md").read_text()
    assert md.count("- **", md.index("## Threshold sweep")) >= table["task"].nunique()


def committed_sweep(name: str) -> tuple[pd.DataFrame, list[str]]:
    table = stability.read_table(REPO_ROOT / "results" / name / thresholds.FILE)
    return table, list(table.columns[:table.columns.get_loc("threshold")])


def test_comparisons_across_norm_are_labelled_by_what_differs(tmp_path: Path) -> None:
    """results/pre_vs_post_ln declares {norm: post, warmup: none@0} vs {norm: pre, warmup: none@0} (and at
    linear@20): those rows are Pre-LN vs Post-LN, not warmup vs no warmup."""
    table, keys = committed_sweep("pre_vs_post_ln")
    rows = thresholds.shown(table)
    cross = rows[~rows["warmup_only"]]
    assert set(cross["comparison"]) == {"norm=pre vs norm=post (none@0)", "norm=pre vs norm=post (linear@20)"}
    assert set(rows.loc[rows["warmup_only"], "comparison"]) == {"linear@20"}
    assert (rows.loc[rows["warmup_only"], "warmup_steps"] == 20).all()
    lines = thresholds.summary_lines(table, keys)
    pre = next(line for line in lines if line.startswith("- **reverse + adam + pre**"))
    post = next(line for line in lines if line.startswith("- **reverse + adam + post**"))
    assert "longest warmup linear@20 vs no warmup: ratio > 1" in pre
    assert "norm=pre vs norm=post (none@0): ratio > 1" in pre and "norm=pre vs norm=post (linear@20): ratio > 1" in pre
    assert "none@0 at f in" not in pre.replace("(none@0) at f in", "")  # never a bare 'none@0' as if a warmup
    assert "norm=" not in post  # the Post-LN arm has warmup vs no warmup only
    drawn = thresholds.figure(table, keys, tmp_path, n_lrs=5)
    v = drawn.values
    assert set(v["comparison"]) == set(rows["comparison"]) and len(v) == len(rows)
    assert not v.loc[v["comparison"].str.startswith("norm="), "warmup_only"].any()
    # undetermined ratios sit in the strip, a row per comparison of the panel; every other mark in the panel
    und = v[v["kind"] == "undetermined"]
    assert len(und) and und["strip"].all() and und["ratio"].isna().all() and not v.loc[v["kind"] != "undetermined", "strip"].any()
    assert und.groupby(["arm", "comparison"])["y"].nunique().eq(1).all()
    assert und.groupby("arm").apply(lambda g: g.groupby("comparison")["y"].first().is_unique, include_groups=False).all()
    # the interval's coverage is the table's, read from the rows drawn
    assert set(v["ci_coverage"]) == set(rows["ci_coverage"])


def test_warmup_ablation_rows_are_warmup_vs_no_warmup_only() -> None:
    table, keys = committed_sweep("warmup_ablation")
    rows = thresholds.shown(table)
    assert len(rows) and rows["warmup_only"].all() and not thresholds.cross_key(table).any()
    assert not any("norm=" in line for line in thresholds.summary_lines(table, keys))


def test_ratio_above_one_agrees_with_the_printed_value() -> None:
    res = runs_frame()
    probes = stability.probes_from_runs(res)
    keys = stability.setting_keys(probes)
    declared = stability.Declared(pairs=((tuple(sorted({"warmup": "none", "warmup_steps": 0}.items())),
                                          tuple(sorted({"warmup": "linear", "warmup_steps": 60}.items()))),))
    table = thresholds.sweep(probes, keys, res, declared)
    at = table["threshold"].isin([0.4, 0.45]) & (table["warmup_steps"] == 60)
    table.loc[at, "ratio"] = [1.0004, 1.006]  # print as 1.00 (not > 1) and 1.01 (> 1)
    assert thresholds.above_one(table[at]).tolist() == [False, True]
    line = thresholds.summary_lines(table, keys)[0]
    assert "ratio > 1 for f in 0.45-0.80 (8 of 18 thresholds)" in line
