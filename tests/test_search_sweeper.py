"""The real MaxStableLRSweeper, driven through Hydra in a subprocess, under three launchers.

A toy Hydra app (stable iff lr <= threshold) stands in for training; it writes its summary with
warmup_lab.runs like the trainer does, skips finished runs like the trainer does, and logs each
real "training" to calls.log so that a re-run can be shown to train nothing.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from warmup_lab import runs, stability
from warmup_lab.lr_search import predicted_probes
from warmup_lab.summary import read_summary

pytestmark = pytest.mark.slow  # every test here starts interpreters: a sweep, a launcher, or both

APP = '''
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from warmup_lab import runs
from warmup_lab.summary import is_finished, read_summary, write_summary

@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if is_finished(read_summary(run_dir)):
        return 0.0
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"{cfg.optimizer.lr} {cfg.seed}\\n")
    if cfg.crash_above is not None and cfg.optimizer.lr > cfg.crash_above:
        raise RuntimeError("boom")
    status = runs.COMPLETED if cfg.optimizer.lr <= cfg.threshold else runs.DIVERGED
    final = cfg.final if status == runs.COMPLETED else float("nan")  # default 0.1: learned, as plain would say
    write_summary(run_dir, {"status": status, "target_lr": cfg.optimizer.lr, "seed": cfg.seed,
                            "init_loss": 2.3, "final_train_loss": final, "task_info": {"baseline_loss": cfg.baseline}})
    return float(cfg.optimizer.lr)

if __name__ == "__main__":
    main()
'''
CONFIG = '''
seed: 0
threshold: 0.01
crash_above: null
final: 0.1
baseline: null
optimizer: {lr: 0.001}
hydra:
  sweep: {dir: sweep, subdir: "${hydra.job.override_dirname}"}
  sweeper:
    params: {threshold: "0.01,0.05"}
'''
COARSE = ["hydra.sweeper.start_lr=0.01", "hydra.sweeper.resolution=2", "hydra.sweeper.seeds=[0]"]


@pytest.fixture
def app(tmp_path):
    (tmp_path / "my_app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text(CONFIG)
    return tmp_path


def sweep(app: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "my_app.py", "-m", "hydra/sweeper=max_stable_lr", *args]
    proc = subprocess.run(cmd, cwd=app, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def load(app: Path):
    out = app / "sweep"
    rows = list(csv.DictReader((out / "eta_max.csv").open()))
    agg = list(csv.DictReader((out / "eta_max_summary.csv").open()))
    return json.loads((out / "search.json").read_text()), rows, agg


def check_probes(report):
    """Every probe has a run dir whose summary status agrees with the probe."""
    for setting in report["settings"]:
        for res in setting["seeds"]:
            for p in res["probes"]:
                summary = read_summary(Path(p["run_dir"]))
                if p["stable"] is None:
                    assert summary is None and p["status"] == "no_summary" and "boom" in p["job_error"]
                else:
                    assert summary["status"] == p["status"] and p["stable"] == (p["status"] == "completed")


def test_basic_launcher_defaults_and_rerun_reuses(app):
    first = sweep(app)  # params from config.yaml; default seeds [0, 1] and search parameters
    assert "round 1: 4 probes" in first.stdout and "searches done 4/4" in first.stdout
    report, rows, agg = load(app)
    check_probes(report)
    assert report["criterion"]["search"] == stability.DEFAULT_CRITERION
    assert [s["overrides"] for s in report["settings"]] == [{"threshold": "0.01"}, {"threshold": "0.05"}]
    for setting in report["settings"]:
        thr = float(setting["overrides"]["threshold"])
        for res in setting["seeds"]:
            assert thr / 2**0.25 < res["eta_max"] <= thr < res["hi"] and res["done"] and not res["non_monotone"]
            assert res["n_probes"] == predicted_probes(thr)  # seeds agree: no cross-seed probe
        plain = [a for a in setting["summary"] if a["criterion"] == "plain"][0]
        assert plain["n_seeds"] == 2 and plain["estimate"] == setting["seeds"][0]["eta_max"] == plain["ci_low"]
    assert list(rows[0]) == ["setting", "threshold", *stability.ETA_COLUMNS]
    plain_rows = [r for r in rows if r["criterion"] == "plain"]
    assert [(r["threshold"], r["seed"]) for r in plain_rows] == [("0.01", "0"), ("0.01", "1"), ("0.05", "0"), ("0.05", "1")]
    plain_agg = [a for a in agg if a["criterion"] == "plain"]
    assert [a["threshold"] for a in plain_agg] == ["0.01", "0.05"]
    assert float(plain_agg[0]["estimate"]) == float(plain_rows[0]["eta_max"])
    calls = (app / "calls.log").read_text()
    outputs = {f: (app / "sweep" / f).read_bytes() for f in ("search.json", "eta_max.csv", "eta_max_summary.csv")}
    sweep(app)  # the same command again: every probe is already finished
    assert (app / "calls.log").read_text() == calls
    assert {f: (app / "sweep" / f).read_bytes() for f in outputs} == outputs


def test_joblib_launcher_parallel_with_error_probes(app):
    proc = sweep(app, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "crash_above=0.05",
                 "++hydra.sweeper.params.threshold='0.02,0.1'",
                 "hydra.sweeper.check_above=0", *COARSE)
    assert "Joblib.Parallel" in proc.stdout + proc.stderr
    report, rows, _ = load(app)
    rows = [r for r in rows if r["criterion"] == "plain"]
    check_probes(report)
    low, high = (s["seeds"][0] for s in report["settings"])
    kw = dict(start_lr=0.01, resolution=2, check_above=0)
    assert low["eta_max"] == 0.02 and low["n_errors"] == 0 and low["n_probes"] == predicted_probes(0.02, **kw)
    # threshold 0.1, but runs above 0.05 crash: retried once, then counted unstable and flagged
    assert high["eta_max"] == 0.04 and high["errors_as_unstable"] == [0.16, 0.08] and high["n_errors"] == 4
    assert high["n_probes"] == predicted_probes(0.04, **kw) + 2
    assert [r["eta_max"] for r in rows] == ["0.02", "0.04"]  # the tables count a kept error as unstable


def test_submitit_local_launcher(app):
    sweep(app, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1", "threshold=0.03",
          "hydra.sweeper.check_above=0", *COARSE)
    report, rows, agg = load(app)
    check_probes(report)
    assert list((app / "sweep" / ".submitit").iterdir())
    assert [(r["threshold"], r["eta_max"], r["hi"], r["n_probes"]) for r in rows if r["criterion"] == "plain"] == [
        ("0.03", "0.02", "0.04", "3")]
    assert report["settings"][0]["seeds"][0]["done"]


def test_lr_override_is_a_config_error(app):
    proc = sweep(app, "optimizer.lr=0.1", check=False)
    assert proc.returncode == 2 and "the search sets it" in proc.stderr
    assert not (app / "calls.log").exists()


def test_real_trainer_two_settings(tmp_path):
    """The sweeper over `python -m warmup_lab.train`; a re-run re-uses every finished probe."""
    tiny = ["task=modadd", "train.steps=20", "logger=none", "model.d_model=16", "model.n_layers=1",
            "model.n_heads=2", "train.batch_size=16", "train.eval_every=0", "train.eval_batches=1",
            "train.checkpoint_every=0", "train.progress=false", "data.eval_batch_size=32"]
    # coarse: x4 resolution from 0.01; at 20 steps nothing learns yet, so here "stable" = did not diverge
    search = ["hydra.sweeper.seeds=[0]", "hydra.sweeper.start_lr=0.01", "hydra.sweeper.resolution=4",
              "hydra.sweeper.bracket_factor=16", "hydra.sweeper.check_above=0", "hydra.sweeper.max_rounds=4",
              "hydra.sweeper.criterion=not_diverged", f"hydra.sweeper.out_dir={tmp_path / 'search'}"]
    cmd = [sys.executable, "-m", "warmup_lab.train", "-m", "hydra/sweeper=max_stable_lr",
           "schedule=linear_cosine,none_constant", f"runs_root={tmp_path / 'runs'}", *tiny, *search]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "search" / "search.json").read_text())
    probes = [(p["lr"], p["status"], p["run_dir"]) for s in report["settings"] for r in s["seeds"] for p in r["probes"]]
    assert len(report["settings"]) == 2 and len(probes) >= 4
    for lr, status, run_dir in probes:
        summary = read_summary(Path(run_dir))
        assert summary["status"] == status in runs.FINISHED_STATUSES and summary["target_lr"] == pytest.approx(lr)
        assert Path(run_dir).parent == tmp_path / "runs"
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("skip:") == len(probes)
    assert json.loads((tmp_path / "search" / "search.json").read_text()) == report


def test_empty_seeds_is_one_line_error(app):
    proc = sweep(app, "hydra.sweeper.seeds=[]", check=False)
    assert proc.returncode == 2 and not (app / "calls.log").exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "hydra.sweeper.seeds" in lines[0] and "at least one seed" in lines[0]


def test_empty_settings_grid_is_one_line_error(app):
    proc = sweep(app, "threshold=range(0,0)", check=False)
    assert proc.returncode == 2 and not (app / "calls.log").exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "settings grid=" in lines[0] and "it is empty" in lines[0]


def test_csv_columns_are_setting_keys_only(app):
    (app / "config.yaml").write_text(CONFIG + "logger: {group: x}\nthreads: null\nruns_root: r\ntrain: {progress: true}\n")
    sweep(app, "logger.group=y", "threads=1", "runs_root=elsewhere", "train.progress=false", *COARSE)
    out = app / "sweep"
    for name in (stability.ETA_FILE, stability.SUMMARY_FILE, stability.P_STABLE_FILE):
        header = next(csv.reader((out / name).open()))
        assert header[:2] == ["setting", "threshold"], (name, header)
        assert not {"logger.group", "threads", "runs_root", "train.progress"} & set(header)


KEYED_APP = '''
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from warmup_lab import runs
from warmup_lab.summary import write_summary

@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    lr, ws = cfg.optimizer.lr, cfg.warmup_steps
    threshold = 0.01 * (1 + ws / 5) * 1.5 ** cfg.seed  # seeds disagree: each seed is probed at the median seed's edge
    ok = lr <= threshold
    final = 0.3 + 5 * lr if ok else float("nan")  # below 0.9 l0 whenever stable: learned_0.9 steers as plain would
    write_summary(run_dir, {"status": runs.COMPLETED if ok else runs.DIVERGED, "target_lr": lr, "seed": cfg.seed,
                                 "task": "toy", "warmup": "linear" if ws else "none", "warmup_steps": ws,
                                 "init_loss": 2.3, "final_train_loss": final, "final_eval_loss": final})

if __name__ == "__main__":
    main()
'''
KEYED_CONFIG = '''
seed: 0
warmup_steps: 0
optimizer: {lr: 0.001}
hydra:
  sweep: {dir: sweep, subdir: "${hydra.job.override_dirname}"}
  sweeper:
    params: {warmup_steps: "0,15"}
    seeds: [0, 1, 2]
'''


def test_sweeper_report_and_figure_get_the_same_eta_max_from_the_same_probes(tmp_path, monkeypatch):
    from warmup_lab import plots
    from warmup_lab.report import build_report

    (tmp_path / "my_app.py").write_text(KEYED_APP)
    (tmp_path / "config.yaml").write_text(KEYED_CONFIG)
    proc = sweep(tmp_path)
    assert "median [" in proc.stdout
    drawn = []
    real = plots.eta_max_vs_warmup
    monkeypatch.setattr(plots, "eta_max_vs_warmup", lambda *a, **kw: drawn.append(real(*a, **kw)) or drawn[-1])
    out = build_report([tmp_path / "sweep"], tmp_path / "report")
    cols = ["warmup_steps", "criterion", "seed", "eta_max", "lo", "hi", "censored", "n_probes", "non_monotone"]
    by = ["criterion", "warmup_steps", "seed"]
    from_sweeper = stability.read_table(tmp_path / "sweep" / stability.ETA_FILE)[cols].sort_values(by).reset_index(drop=True)
    from_report = stability.read_table(out / stability.ETA_FILE)[cols].sort_values(by).reset_index(drop=True)
    pd.testing.assert_frame_equal(from_sweeper, from_report, check_dtype=False)
    # the figure draws each seed at its eta_max (a seed censored below at its first unstable LR, hi)
    marks = drawn[0].values
    marks = marks[marks["kind"] != "median"].sort_values(by).reset_index(drop=True)
    drawn_at = from_sweeper["eta_max"].where(from_sweeper["censored"] != "below", from_sweeper["hi"])
    pd.testing.assert_frame_equal(marks[by], from_sweeper[by], check_dtype=False)
    assert marks["y"].tolist() == pytest.approx(drawn_at.tolist())
    assert (marks["kind"] == from_sweeper["censored"].replace("", "point")).all()
    # the seeds disagreed, so each was probed at the median seed's edge: more probes than a lone search
    report = json.loads((tmp_path / "sweep" / "search.json").read_text())
    extra = [r["n_probes"] - predicted_probes(0.01 * (1 + int(s["overrides"]["warmup_steps"]) / 5) * 1.5 ** r["seed"])
             for s in report["settings"] for r in s["seeds"]]
    assert min(extra) >= 0 and sum(extra) > 0, extra
    summary = stability.read_table(tmp_path / "sweep" / stability.SUMMARY_FILE)
    report_summary = stability.read_table(out / stability.SUMMARY_FILE)
    key = ["criterion", "warmup_steps"]
    pd.testing.assert_frame_equal(summary.sort_values(key)[key + ["estimate", "ci_low", "ci_high", "n_probes"]].reset_index(drop=True),
                                  report_summary.sort_values(key)[key + ["estimate", "ci_low", "ci_high", "n_probes"]].reset_index(drop=True),
                                  check_dtype=False)


def test_shared_brackets_find_the_same_eta_max_with_fewer_runs(tmp_path):
    (tmp_path / "my_app.py").write_text(KEYED_APP)
    (tmp_path / "config.yaml").write_text(KEYED_CONFIG)
    found = {}
    for share in ("false", "true"):
        out = tmp_path / f"share_{share}"
        sweep(tmp_path, f"hydra.sweeper.share_brackets={share}", "hydra.sweeper.cross_seed=false",
              f"hydra.sweeper.out_dir={out}", f"hydra.sweep.dir={out}")
        table = stability.read_table(out / stability.ETA_FILE)
        found[share] = table[table["criterion"] == stability.DEFAULT_CRITERION].reset_index(drop=True)  # it steers
    cols = ["warmup_steps", "seed", "eta_max", "hi", "censored"]
    pd.testing.assert_frame_equal(found["false"][cols], found["true"][cols])
    assert found["true"]["n_probes"].sum() < found["false"]["n_probes"].sum()


def test_a_budget_in_runs_stops_before_a_round_that_would_exceed_it_and_every_criterion_is_printed(app):
    proc = sweep(app, "hydra.sweeper.max_probes=5", "hydra.sweeper.criterion=plain")
    report, _, _ = load(app)
    assert report["spent"]["probes"] == 4 and report["spent"]["max_probes"] == 5  # a second round of 4 would exceed it
    assert "budget reached: 4 of 5 runs" in proc.stdout
    assert all(not s["done"] for setting in report["settings"] for s in setting["seeds"])
    for name in ("plain", *stability.DEFAULT_CRITERIA):  # one aggregate line per criterion, the steering one marked
        assert f", {name}" in proc.stdout
    assert ", plain (steers)" in proc.stdout
    assert "criteria: plain: status `completed`" in proc.stdout and "; learned_0.9: plain, and final train" in proc.stdout


def test_a_warning_line_when_the_stable_runs_at_the_edge_did_not_learn(app):
    # completed runs (final 2.0 < l0 2.3) that never got below the task's baseline 1.5: plain calls them stable
    proc = sweep(app, "hydra.sweeper.criterion=plain", "final=2.0", "baseline=1.5", "hydra.sweeper.seeds=[0]")
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning: setting")]
    assert len(warnings) == 2 and "1 of 1 stable runs at the edge did not learn (final train loss up to 2" in warnings[0]
    assert "steer with learned_0.9" in warnings[0]
    quiet = sweep(app, "hydra.sweeper.criterion=plain", "hydra.sweeper.seeds=[0]", "baseline=1.5",
                  "hydra.sweeper.out_dir=quiet", "hydra.sweep.dir=quiet")  # final 0.1: learned
    assert "warning: setting" not in quiet.stdout
