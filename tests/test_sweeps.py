"""Hydra multiruns of the real trainer: every launcher, W&B under each, and resume after SIGKILL."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from warmup_lab import runs
from warmup_lab.summary import is_finished, read_summary
from wandb_io import find_run_files, read_run, wait_complete

pytestmark = pytest.mark.slow  # every test here starts interpreters: a sweep, a launcher, or both

TINY = ["task=modadd", "train.steps=4", "train.batch_size=8", "train.eval_batches=1", "train.checkpoint_every=0",
        "train.progress=false", "threads=1"]
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                       "hydra.launcher.cpus_per_task=1"],
}


def _run_dirs(root: Path) -> list[Path]:
    return [d for d in runs.find_run_dirs([root]) if (d / runs.CONFIG_FILE).exists()]


def _finished(run_dir: Path) -> bool:
    return is_finished(read_summary(run_dir))


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_every_launcher_gives_one_summary_and_one_wandb_run_per_job(tmp_path, launcher):
    root = tmp_path / "sweep"
    args = ["-m", *TINY, "optimizer.lr=1e-3,1e-2", "seed=0,1", "logger=wandb", "logger.group=sweep-a",
            f"runs_root={root}", *LAUNCHERS[launcher]]
    proc = run_cli("warmup_lab.train", args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    dirs = _run_dirs(root)
    assert len(dirs) == 4
    ids = set()
    for d in dirs:
        summary = read_summary(d)
        assert summary and summary["status"] in runs.FINISHED_STATUSES
        assert d.name.endswith(summary["config_hash"])
        (wandb_file,) = find_run_files(d)  # one W&B run per job: no job reused another's run
        assert wait_complete(wandb_file)
        logged = read_run(wandb_file)
        assert logged["run"]["group"] == "sweep-a"
        assert logged["summary"]["status"] == summary["status"]
        assert [r["train/loss"] for r in logged["history"] if "train/loss" in r] == pytest.approx(
            [float(r["loss"]) for r in csv.DictReader((d / runs.METRICS_FILE).open())])
        ids.add(logged["run"]["id"])
    assert len(ids) == 4


def test_a_sweep_killed_mid_way_and_rerun_has_every_run_exactly_once(tmp_path):
    root = tmp_path / "sweep"
    args = ["-m", "task=modadd", "train.steps=150", "train.batch_size=16", "train.eval_batches=1",
            "train.checkpoint_every=10", "train.progress=false", "threads=1", "logger=none",
            "optimizer.lr=1e-3,2e-3,4e-3,8e-3", f"runs_root={root}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "warmup_lab.train", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300

    def finished() -> int:
        return sum(_finished(d) for d in _run_dirs(root)) if root.exists() else 0

    # Kill once one run has finished and the next has a checkpoint: a finished run, a half-done one,
    # and runs never started.
    while time.time() < deadline and proc.poll() is None:
        # The checkpoint must belong to an unfinished run: a finished run deletes its own just after
        # writing its summary, and a kill in between would leave nothing half-done to resume.
        if finished() >= 1 and any((d / runs.CHECKPOINT_FILE).exists() and not _finished(d)
                                   for d in _run_dirs(root)):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = finished()
    assert 1 <= done_before < 4, "the sweep was not interrupted mid-way"
    rerun = run_cli("warmup_lab.train", args, cwd=tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("skip:") == done_before
    assert "resume:" in rerun.stdout
    dirs = _run_dirs(root)
    assert len(dirs) == 4
    for d in dirs:
        summary = read_summary(d)
        assert summary["status"] in runs.FINISHED_STATUSES
        steps = [int(r["step"]) for r in csv.DictReader((d / runs.METRICS_FILE).open())]
        assert steps == list(range(summary["steps_run"])), d
