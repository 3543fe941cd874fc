"""End-to-end runs of the real trainer: every task x optimizer, divergence, outputs, W&B files, resume."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, make_cfg, run_cli
from warmup_lab import runs
from warmup_lab.job import train
from wandb_io import find_run_files, read_run, wait_complete

TASKS = {
    "digits": ["model.width=0.5"],
    "shapes": ["model.width=0.5"],
    "modadd": [],
    "copy": [],
    "reverse": [],
}
OPTIMIZERS = ["sgd", "adam", "adamw", "radam", "gi_adam"]
SUMMARY_KEYS = {
    "status", "steps_run", "diverged_step", "final_train_loss", "final_eval_loss", "final_eval_acc",
    "spike_events", "max_spike_ratio", "first_spike_step", "catapult_count", "wall_s", "samples_per_s",
    "peak_lr", "nominal_peak_lr",
    "task", "model", "optimizer", "warmup", "warmup_steps", "target_lr", "seed",
}
# Fields that legitimately differ between an interrupted-and-resumed run and an uninterrupted one.
TIMING_KEYS = {"wall_s", "samples_per_s", "run_dir", "resumed_from", "wandb_mode"}


def _schedule_for(optimizer: str) -> list[str]:
    # SGD has no beta2, so the default (linear warmup) schedule is used for every optimizer.
    return ["schedule=linear_cosine", "schedule.warmup_steps=2"]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_and_optimizer_runs_and_writes_all_outputs(tmp_path, task, optimizer):
    lr = "0.05" if optimizer == "sgd" else "1e-3"
    cfg = make_cfg([f"task={task}", f"optimizer={optimizer}", f"optimizer.lr={lr}", *TASKS[task], *FAST,
                    *_schedule_for(optimizer)])
    summary = train(cfg, tmp_path / "run")
    assert SUMMARY_KEYS <= set(summary), SUMMARY_KEYS - set(summary)
    assert summary["status"] in runs.FINISHED_STATUSES
    assert summary["steps_run"] == 6 and summary["task"] == task and summary["optimizer"] == optimizer
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == summary["status"]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(6))
    assert all(math.isfinite(float(r["grad_norm"])) for r in rows)
    assert float(rows[0]["lr"]) == 0.0 and float(rows[2]["lr"]) == pytest.approx(float(lr))
    evals = list(csv.DictReader((run_dir / "eval.csv").open()))
    assert [int(r["step"]) for r in evals] == [3, 6]
    assert (run_dir / "config.yaml").exists() and not (run_dir / "checkpoint.pt").exists()


def test_charlm_on_a_text_file_reports_perplexity(tmp_path, text_file):
    cfg = make_cfg(["task=charlm", f"data.path={text_file}", *FAST])
    summary = train(cfg, tmp_path / "run")
    assert summary["final_eval_ppl"] == pytest.approx(math.exp(summary["final_eval_loss"]), rel=1e-5)


def test_a_huge_lr_diverges_and_stops_within_a_few_steps(tmp_path):
    cfg = make_cfg(["task=modadd", "optimizer=sgd", "optimizer.lr=1e4", "optimizer.momentum=0.0",
                    "schedule=none_constant", *FAST, "train.steps=100"])
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == runs.DIVERGED
    assert summary["steps_run"] <= 10 and summary["diverged_step"] == summary["steps_run"] - 1
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == summary["steps_run"] + 1


def test_a_tiny_lr_is_failed_to_train_not_completed(tmp_path):
    cfg = make_cfg(["task=modadd", "optimizer=sgd", "optimizer.lr=1e-9", "schedule=none_constant", *FAST])
    assert train(cfg, tmp_path / "run")["status"] == runs.FAILED


def test_peak_lr_is_the_largest_lr_applied_not_the_nominal_target(tmp_path):
    cfg = make_cfg(["task=modadd", "optimizer=adam", "optimizer.lr=1e-3", "schedule=untuned_linear_cosine", *FAST,
                    "train.steps=20"])
    summary = train(cfg, tmp_path / "run")
    applied = [float(r["lr"]) for r in csv.DictReader((tmp_path / "run" / "metrics.csv").open())]
    assert summary["peak_lr"] == max(applied) < summary["target_lr"]  # the warmup multiplies a decay already under way


def test_a_finished_run_is_skipped_not_redone(tmp_path, capsys):
    cfg = make_cfg(["task=modadd", *FAST])
    first = train(cfg, tmp_path / "run")
    again = train(cfg, tmp_path / "run")
    assert again == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert again["wall_s"] == first["wall_s"]
    assert "skip:" in capsys.readouterr().out


def test_same_seed_gives_the_same_metrics(tmp_path):
    a = train(make_cfg(["task=digits", "model.width=0.5", *FAST]), tmp_path / "a")
    b = train(make_cfg(["task=digits", "model.width=0.5", *FAST]), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()
    assert a["final_eval_acc"] == b["final_eval_acc"]


def test_sharpness_monitor_logs_lr_times_sharpness_over_two(tmp_path):
    cfg = make_cfg(["task=digits", "model.width=0.5", "optimizer=sgd", *FAST, "sharpness.every=3",
                    "sharpness.iters=5"])
    summary = train(cfg, tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "sharpness.csv").open()))
    assert [int(r["step"]) for r in rows] == [3, 6]
    for r in rows:
        assert float(r["sharpness"]) > 0
        lr = summary["target_lr"]  # after warmup the LR at step 3 is near the target; ratio uses the LR in use
        assert float(r["lr_sharpness_over_2"]) == pytest.approx(float(r["sharpness"]) * float(r["lr_used"]) / 2)
        assert float(r["lr_used"]) <= lr


def test_wandb_offline_run_file_holds_the_logged_losses_and_summary(tmp_path):
    cfg = make_cfg(["task=modadd", *FAST, "logger=wandb", "logger.group=g1"])
    summary = train(cfg, tmp_path / "run")
    files = find_run_files(tmp_path / "run")
    assert len(files) == 1
    assert wait_complete(files[0]), "W&B never wrote the run's exit record"
    logged = read_run(files[0])
    assert logged["run"]["group"] == "g1"
    losses = [row["train/loss"] for row in logged["history"] if "train/loss" in row]
    on_disk = [float(r["loss"]) for r in csv.DictReader((tmp_path / "run" / "metrics.csv").open())]
    assert losses == pytest.approx(on_disk, rel=1e-12)
    assert logged["summary"]["status"] == summary["status"]
    assert logged["summary"]["final_train_loss"] == pytest.approx(summary["final_train_loss"])
    assert logged["config"]["optimizer"]["lr"] == pytest.approx(1e-3)


def test_wandb_failure_is_a_warning_and_the_run_goes_on(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where W&B wants a directory")
    cfg = make_cfg(["task=modadd", *FAST, "logger=wandb", f"logger.dir={blocked}/sub"])
    with pytest.warns(UserWarning, match="W&B"):
        summary = train(cfg, tmp_path / "run")
    assert summary["status"] in runs.FINISHED_STATUSES and (tmp_path / "run" / "summary.json").exists()


def _compare(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == {k: v for k, v in b.items() if k not in TIMING_KEYS}


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_and_matches_the_uninterrupted_run(tmp_path):
    args = ["task=modadd", "train.steps=400", "train.checkpoint_every=20", "train.eval_every=100",
            "train.progress=false", "logger=none", "schedule.warmup_steps=50"]
    whole = run_cli("warmup_lab.train", [*args, f"out={tmp_path / 'whole'}"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "warmup_lab.train", *args, f"out={out}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # any moment after the first checkpoint: it resumes from one
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    resumed = run_cli("warmup_lab.train", [*args, f"out={out}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resume:" in resumed.stdout
    a = json.loads((tmp_path / "whole" / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    assert b["resumed_from"] > 0
    _compare(a, b)
    assert (tmp_path / "whole" / "metrics.csv").read_text() == (out / "metrics.csv").read_text()
    assert (tmp_path / "whole" / "eval.csv").read_text() == (out / "eval.csv").read_text()


@pytest.mark.slow
def test_cli_run_names_its_directory_by_config_hash_and_bad_input_is_one_line(tmp_path):
    ok = run_cli("warmup_lab.train", ["task=modadd", "train.steps=5", "logger=none", "train.progress=false",
                                      f"runs_root={tmp_path}/runs"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run_dir.name.endswith(summary["config_hash"])
    bad = run_cli("warmup_lab.train", ["task=modadd", "optimizer.lr=-1", "logger=none",
                                       f"runs_root={tmp_path}/bad"], cwd=tmp_path)
    assert bad.returncode != 0
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optimizer.lr" in lines[0] and "-1" in lines[0], bad.stderr


def test_grad_clip_logs_the_norm_before_clipping_and_clips_the_update(tmp_path):
    from warmup_lab.loggers import NullLogger
    from warmup_lab.trainer import Run

    base = ["task=modadd", "optimizer=sgd", "optimizer.lr=0.5", "optimizer.momentum=0.0",
            "optimizer.weight_decay=0.0", "schedule=none_constant", *FAST, "train.steps=1"]
    moved, logged = {}, {}
    for name, extra in (("free", []), ("clipped", ["train.grad_clip=1e-3"])):
        (tmp_path / name).mkdir()
        run = Run(make_cfg([*base, *extra]), tmp_path / name)
        before = torch.cat([p.detach().flatten().clone() for p in run.params])
        run.execute(NullLogger())
        after = torch.cat([p.detach().flatten() for p in run.params])
        moved[name] = float((after - before).norm())
        logged[name] = float(next(csv.DictReader((tmp_path / name / "metrics.csv").open()))["grad_norm"])
    assert logged["clipped"] == pytest.approx(logged["free"]) and logged["free"] > 1e-3  # norm before clipping
    assert moved["free"] == pytest.approx(0.5 * logged["free"], rel=1e-4)                 # plain SGD: lr * |g|
    assert moved["clipped"] == pytest.approx(0.5 * 1e-3, rel=1e-3)                       # clipped: lr * max_norm
