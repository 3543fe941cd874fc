"""The report over a small fake-but-realistic sweep: tables, numbers, figures, bad inputs, the CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from warmup_lab import runs, stability
from warmup_lab.report import build_report, main
from warmup_lab.summary import write_summary

SHAPES, LENGTHS, LRS, SEEDS = ("constant", "linear"), (10, 50), (1e-3, 1e-2, 1e-1), (0, 1)
STEPS = 30
DETECT = {"spike": {"ratio": 2.0, "window": 20, "floor": 0.05, "abs_floor": 0.0},
          "divergence": {"factor": 10.0, "patience": 3, "ceiling": None},
          "catapult": {"rise": 2.0, "recover": 1.2}, "failed": {"loss_margin": 0.0, "heldout": None}}


def outcome(shape: str, tw: int, lr: float, seed: int) -> str:
    """constant diverges at lr 0.1; linear/10 too; linear/50/seed 1 is non-monotone (fails at 1e-3 and 0.1)."""
    if lr == 1e-1 and (shape == "constant" or tw == 10):
        return runs.DIVERGED
    if shape == "linear" and tw == 50 and seed == 1 and lr in (1e-3, 1e-1):
        return runs.FAILED
    return runs.COMPLETED


def accuracy(shape: str, tw: int, lr: float, seed: int) -> float:
    return 0.5 + 0.1 * math.log10(lr / 1e-3) + tw / 1000 + 0.01 * seed + (0.05 if shape == "linear" else 0)


def write_run(root: Path, shape: str, tw: int, lr: float, seed: int) -> Path:
    status = outcome(shape, tw, lr, seed)
    chash = f"{shape[:3]}{tw}{round(-math.log10(lr))}{seed}abcd"
    run_dir = root / f"toy-adamw-{shape}-cosine-{chash}"
    run_dir.mkdir(parents=True)
    init = 2.3 + 0.01 * seed
    acc = {runs.COMPLETED: accuracy(shape, tw, lr, seed), runs.FAILED: 0.1, runs.DIVERGED: math.nan}[status]
    final = {runs.COMPLETED: init - 2 * acc, runs.FAILED: init + 0.01, runs.DIVERGED: math.nan}[status]
    n = 21 if status == runs.DIVERGED else STEPS
    steps = list(range(n))
    lrs = [lr * min(1.0, (t + 1) / tw) if shape == "linear" else (lr * 0.1 if t < tw else lr) for t in steps]
    losses = [init - (init - (final if math.isfinite(final) else 1.0)) * t / STEPS for t in steps]
    spike = [0] * n
    if lr == 1e-2:
        losses[15], spike[15] = losses[15] * 3, 1
    if status == runs.DIVERGED:
        losses[18:] = [50.0, 80.0, math.inf]
    pd.DataFrame({"step": steps, "loss": losses, "lr": lrs, "grad_norm": 1.0, "spike": spike}).to_csv(
        run_dir / runs.METRICS_FILE, index=False)
    pd.DataFrame({"step": [n], "eval_loss": [final], "eval_acc": [acc]}).to_csv(run_dir / runs.EVAL_FILE, index=False)
    (run_dir / runs.CONFIG_FILE).write_text(f"seed: {seed}\noptimizer:\n  lr: {lr}\n")
    summary = {
        "status": status, "steps_run": n, "diverged_step": 20 if status == runs.DIVERGED else None,
        "init_loss": init, "final_train_loss": final, "final_eval_loss": final, "final_eval_acc": acc,
        "best_eval_acc": acc, "spike_events": sum(spike), "max_spike_ratio": 3.0 if sum(spike) else 0.0,
        "first_spike_step": 15 if sum(spike) else None, "catapult_count": 1 if lr == 1e-2 and seed == 0 else 0,
        "spikes": [{"start": 15, "length": 1, "peak_step": 15, "peak_loss": losses[15], "peak_ratio": 3.0}]
        if sum(spike) else [],
        "wall_s": 1.5, "samples_per_s": 1000.0, "task": "digits", "model": "resnet20", "norm": "none",
        "optimizer": "adamw", "warmup": shape, "decay": "cosine", "warmup_steps": tw, "target_lr": lr,
        "seed": seed, "train_steps": STEPS, "batch_size": 64, "chance_acc": 0.1,
        "schedule": {"warmup": shape, "decay": "cosine", "warmup_steps": tw, "milestones": [10, 20]},
        "task_info": {"kind": "image", "classes": 10}, "detect": DETECT, "config_hash": chash,
        "experiment": "toy", "sweep_group": "toy", "run_dir": str(run_dir),
    }
    write_summary(run_dir, summary)
    return run_dir


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for shape in SHAPES:
        for tw in LENGTHS:
            for lr in LRS:
                for seed in SEEDS:
                    write_run(root, shape, tw, lr, seed)
    return root


def test_report_tables_numbers_and_figures(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Bad inputs next to good ones: garbage bytes, a run without a summary, an error run, a duplicate.
    bad = sweep / "toy-corrupt"
    bad.mkdir()
    (bad / runs.SUMMARY_FILE).write_bytes(b"\x00\xffgarbage{")
    missing = sweep / "toy-missing"
    missing.mkdir()
    (missing / runs.CONFIG_FILE).write_text("seed: 0\n")
    no_status = sweep / "toy-nostatus"
    no_status.mkdir()
    (no_status / runs.SUMMARY_FILE).write_text('{"steps_run": 3}')
    write_summary(sweep / "toy-error", {"status": "error", "error": "RuntimeError: boom", "steps_run": 0,
                                             "config_hash": "err0"})
    shutil.copytree(next(sweep.glob("toy-adamw-linear*")), tmp_path / "copy" / "dup")

    out = build_report([sweep, tmp_path / "copy"], tmp_path / "out")
    err = capsys.readouterr().err
    assert f"warning: skipping {bad / runs.SUMMARY_FILE}: unreadable JSON" in err
    assert f"warning: skipping {missing / runs.SUMMARY_FILE}: missing" in err
    assert f"warning: skipping {no_status / runs.SUMMARY_FILE}: no 'status' field" in err

    df = pd.read_csv(out / "runs.csv")
    assert len(df) == 2 * 2 * 3 * 2 + 1  # duplicate kept once, error run listed, bad ones skipped
    assert df["config_hash"].is_unique
    assert {"schedule.warmup_steps", "detect.spike.ratio", "task_info.kind"} <= set(df.columns)
    assert "spikes" not in df and json.loads(df["schedule.milestones"].iloc[0]) == [10, 20]

    md = (out / "report.md").read_text()
    for section in ("## Runs", "## Final metric over target LR x warmup length", "## Maximum stable LR (eta_max)",
                    "## Divergence and failure rates", "## Loss spikes and catapults", "## LR sensitivity",
                    "## Figures", "did not finish", "RuntimeError: boom", "### P(stable | LR)",
                    "### Comparisons: ratio of eta_max", "### LR50 (logistic fit", "exact order-statistic 90% interval"):
        assert section in md
    assert "25 runs (24 finished)" in md and "loss > 2 x the median of the previous 20" in md
    assert md.count("_Status (the plain rule") == 3
    for name in stability.DEFAULT_CRITERIA:  # every criterion's definition printed beside the eta_max tables
        assert stability.criterion(name).text in md

    # A known accuracy cell: linear, T_w=10, lr=1e-2, mean over both seeds.
    cells = pd.read_csv(out / "table_final_metric.csv")
    cell = cells[(cells.warmup == "linear") & (cells.warmup_steps == 10) & (cells.target_lr == 1e-2)].iloc[0]
    expected = (accuracy("linear", 10, 1e-2, 0) + accuracy("linear", 10, 1e-2, 1)) / 2
    assert cell["mean"] == pytest.approx(expected) and cell["n"] == 2
    assert f"{expected:.4g} ± 0.0071 (n=2)" in md
    assert cells[(cells.warmup == "constant") & (cells.target_lr == 0.1)]["n_diverged"].tolist() == [2, 2]

    rates = pd.read_csv(out / "table_rates.csv").set_index(["warmup", "warmup_steps"])
    assert rates.loc[("constant", 10), "diverged_rate"] == pytest.approx(2 / 6)
    assert rates.loc[("linear", 50), "diverged_rate"] == 0
    assert rates.loc[("linear", 50), "failed_rate"] == pytest.approx(2 / 6)

    spikes = pd.read_csv(out / "table_spikes.csv").set_index(["warmup", "warmup_steps"])
    assert spikes.loc[("linear", 10), "mean_spike_events"] == pytest.approx(2 / 6)
    assert spikes.loc[("linear", 10), "mean_catapult_count"] == pytest.approx(1 / 6)

    eta = stability.read_table(out / stability.ETA_FILE).set_index(["criterion", "warmup", "warmup_steps", "seed"])
    assert eta.loc[("plain", "constant", 10, 0), ["eta_max", "hi", "censored"]].tolist() == [1e-2, 1e-1, ""]
    assert eta.loc[("plain", "linear", 50, 0), ["eta_max", "censored"]].tolist() == [1e-1, "above"]
    # seed 1 fails at 1e-3 and 1e-1: the failure below every stable LR is flagged, not taken as the edge
    row = eta.loc[("plain", "linear", 50, 1)]
    assert (row["eta_max"], row["hi"], row["censored"], row["n_unstable_below"]) == (1e-2, 1e-1, "", 1)
    assert row["non_monotone"] and not eta.loc[("plain", "linear", 50, 0), "non_monotone"]
    # a stricter bar moves eta_max: constant/10 at lr 1e-3 ends at 2.3 - 2 x 0.51 = 1.28 > 0.5 x l0 (too slow)
    assert eta.loc[("loss_frac_0.5", "constant", 10, 0), ["eta_max", "n_unstable_below"]].tolist() == [1e-2, 1]
    agg = stability.read_table(out / stability.SUMMARY_FILE).set_index(["criterion", "warmup", "warmup_steps"])
    both = agg.loc[("plain", "linear", 50)]  # a censored seed is counted, listed and enters at its bound
    assert (both["n_seeds"], both["n_censored_below"], both["n_censored_above"]) == (2, 0, 1)
    assert both["censored_seeds"] == "0:above" and both["estimate_censored"] == "above"
    assert both["estimate"] == pytest.approx(math.sqrt(1e-2 * 1e-1))  # >= the midpoint of 0.01 and the bound 0.1
    assert agg.loc[("plain", "constant", 10), ["estimate", "ci_low", "ci_high"]].tolist() == [1e-2, 1e-2, 1e-2]
    assert ">= 0.0316 [0.01, >= 0.1] 50% n=2 (censored 0:above)" in md  # 2 seeds: the range covers 50%
    ps = pd.read_csv(out / stability.P_STABLE_FILE).set_index(["criterion", "warmup", "warmup_steps", "lr"])
    assert ps.loc[("plain", "linear", 50, 1e-3), ["n", "n_stable", "p_stable"]].tolist() == [2, 1, 0.5]

    sens = pd.read_csv(out / stability.SENSITIVITY_FILE).set_index(["warmup", "warmup_steps"])
    fin = df[df.status != "error"]
    per_seed = [stability.lr_sensitivity(g.target_lr, g.final_eval_loss, g.init_loss)
                for _, g in fin[(fin.warmup == "constant") & (fin.warmup_steps == 10)].groupby("seed")]
    assert sens.loc[("constant", 10), "sensitivity"] == pytest.approx(sum(per_seed) / 2)
    assert sens.loc[("constant", 10), "n_lrs"] == 3

    pngs = {p.name: p.stat().st_size for p in out.glob("*.png")}
    for name in ("lr_curves_digits_adamw.png", "loss_curves_digits_adamw.png", "eta_max_vs_warmup.png",
                 "heatmap_digits_adamw_linear.png", "heatmap_digits_adamw_constant.png"):
        assert pngs.get(name, 0) > 5000, name
        assert f"]({name})" in md


def test_lr_sensitivity_on_different_grids_is_refused_with_the_reason(sweep: Path, tmp_path: Path) -> None:
    write_run(sweep, "constant", 10, 1e-4, 0)  # one seed of one setting gets an LR the others lack
    out = build_report([sweep], tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "_Skipped: LR sensitivity compares settings on one fixed grid" in md
    assert not (out / stability.SENSITIVITY_FILE).exists()


def test_single_lr_skips_lr_figures_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for shape in SHAPES:
        write_run(root, shape, 10, 1e-2, 0)
    out = build_report([root], tmp_path / "out")
    md = (out / "report.md").read_text()
    assert "_No eta_max: a single target LR._" in md
    assert "_Figure skipped: no eta_max" in md and "_Skipped: needs at least two target LRs" in md
    assert (out / "lr_curves_digits_adamw.png").exists()


def test_tables_and_figures_this_report_did_not_write_are_removed_as_stale(tmp_path: Path, capsys) -> None:
    root = tmp_path / "sweep"
    for shape in SHAPES:
        write_run(root, shape, 10, 1e-2, 0)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("eta_max_compare.csv", "heatmap_digits_adamw_none.png"):  # an earlier multi-LR design's
        (out / name).write_text("stale")
    (out / "notes.txt").write_text("not a report output")
    build_report([root], out)
    assert not (out / "eta_max_compare.csv").exists() and not (out / "heatmap_digits_adamw_none.png").exists()
    assert "removed eta_max_compare.csv" in capsys.readouterr().out
    assert (out / "notes.txt").exists() and (out / "runs.csv").exists() and (out / "lr_curves_digits_adamw.png").exists()
    again = build_report([out], out)  # rebuilt in place from its own files: everything it wrote stays
    assert (again / "runs.csv").exists() and (again / "lr_curves_digits_adamw.png").exists()


@pytest.mark.slow
def test_cli_default_out_and_no_summaries(sweep: Path, tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "warmup_lab.report", str(sweep)], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "results" / "toy" / "report.md").exists()

    empty = tmp_path / "empty"
    (empty / "run-a").mkdir(parents=True)
    (empty / "run-a" / runs.SUMMARY_FILE).write_text("[1, 2]")
    bad = subprocess.run([sys.executable, "-m", "warmup_lab.report", str(empty)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert lines[-1] == f"error: no run summaries under {empty}; run a sweep first (make sweep)"
    assert lines[0].startswith("warning: skipping") and "not a JSON object" in lines[0]
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nowhere")])
    assert exc.value.code == 2


def test_a_run_with_non_finite_losses_does_not_crash_the_report(sweep: Path, tmp_path: Path) -> None:
    """A completed run whose l0 is inf and final loss NaN (in its summary and its curve): every table and
    figure is written, and the run is judged (unstable under a loss bar), not dropped or raised on."""
    run_dir = write_run(sweep, "linear", 10, 1e-3, 7)
    summary = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
    summary.update(init_loss=math.inf, final_train_loss=math.nan, final_eval_loss=math.inf, final_eval_acc=math.nan)
    summary.pop("schema", None)
    write_summary(run_dir, summary)
    metrics = pd.read_csv(run_dir / runs.METRICS_FILE)
    metrics.loc[::2, "loss"] = math.nan
    metrics.loc[1, "loss"] = -math.inf
    metrics.to_csv(run_dir / runs.METRICS_FILE, index=False)
    out = build_report([sweep], tmp_path / "out")
    eta = stability.read_table(out / stability.ETA_FILE)
    assert 7 in set(eta["seed"])
    for name in (stability.SUMMARY_FILE, stability.COMPARE_FILE, "table_rates.csv", "loss_curves_digits_adamw.png"):
        assert (out / name).stat().st_size > 0, name


def test_a_report_from_its_own_files_is_identical_and_never_reads_its_output_folder(sweep: Path, tmp_path: Path) -> None:
    """Committed results redraw anywhere: runs.csv holds no machine path, a report rebuilt from the files
    alone (no run directories) writes the same bytes, and `--out` with a stale archive is not read."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "curves.csv.gz").write_bytes(b"not a gzip file")  # a stale output must not be an input
    build_report([sweep], out)
    text = (out / "runs.csv").read_text()
    assert str(tmp_path) not in text and "/tmp" not in text
    committed = tmp_path / "committed"
    shutil.copytree(out, committed)
    shutil.rmtree(sweep)
    again = build_report([committed], tmp_path / "again")
    for name in ("runs.csv", stability.ETA_FILE, stability.SUMMARY_FILE, stability.COMPARE_FILE,
                 stability.P_STABLE_FILE, "table_final_metric.csv", "table_rates.csv", "table_spikes.csv",
                 stability.SENSITIVITY_FILE):
        assert (again / name).read_bytes() == (committed / name).read_bytes(), name
    assert pd.read_csv(again / "curves.csv.gz").equals(pd.read_csv(committed / "curves.csv.gz"))
    assert (again / "loss_curves_digits_adamw.png").stat().st_size > 5000


def test_floats_keep_every_digit_through_the_files(tmp_path: Path) -> None:
    from warmup_lab.archive import read_runs
    from warmup_lab.report import write_csv

    values = [0.1 + 0.2, 1 / 3, 2.0 ** -40, 123456.78901234567, math.pi * 1e-7]
    write_csv(pd.DataFrame({"config_hash": ["a", "b", "c", "d", "e"], "x": values}), tmp_path / "runs.csv")
    assert read_runs([tmp_path])["x"].tolist() == values


@pytest.mark.slow
def test_make_report_on_a_fresh_clone_rebuilds_from_the_committed_results(sweep: Path, tmp_path: Path) -> None:
    """`make report EXPERIMENT=x` = `warmup-lab sweep x --report-only`: with no sweeps/x (a fresh clone) it
    reads results/x, and writes the same tables back."""
    clone = tmp_path / "clone"
    build_report([sweep], clone / "results" / "warmup_ablation", experiment="warmup_ablation")
    before = (clone / "results" / "warmup_ablation" / stability.SUMMARY_FILE).read_bytes()
    done = subprocess.run([sys.executable, "-m", "warmup_lab", "sweep", "warmup_ablation", "--report-only"],
                          cwd=clone, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the report is rebuilt from results/warmup_ablation" in done.stdout
    assert (clone / "results" / "warmup_ablation" / stability.SUMMARY_FILE).read_bytes() == before


def test_a_report_opens_with_its_declared_comparisons_and_their_verdicts() -> None:
    from warmup_lab.report import answer_section

    rows = [{"task": "digits", "warmup": w, "warmup_steps": t, "seed": s, "lr": 0.8, "status": "completed",
             "init_loss": 2.3, "final_train_loss": (1.0 if w == "none" else 0.5) + 0.01 * s, "final_eval_loss": 1.0,
             "baseline_loss": 2.3} for w, t in (("none", 0), ("linear", 30)) for s in range(8)]
    declared = stability.Declared(pairs=((tuple(sorted({"warmup": "none", "warmup_steps": 0}.items())),
                                          tuple(sorted({"warmup": "linear", "warmup_steps": 30}.items()))),),
                                  compare_on=("final_train_loss",))
    comp = stability.final_loss_compare(pd.DataFrame(rows), ["task", "warmup", "warmup_steps"], declared=declared)
    md = answer_section(None, comp, ("final_train_loss",))
    assert md[0].startswith("## Answer")
    (line,) = [m for m in md if m.startswith("- ")]
    assert line.startswith("- digits: final training loss of linear@30 / none@0 at lr 0.8: ")
    assert "8 vs 8 seeds" in line and "**resolved, p_holm 0.00781**" in line
    assert answer_section(None, None) == []  # nothing declared: no answer section
