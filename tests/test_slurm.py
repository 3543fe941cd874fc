"""A real one-node SLURM cluster (scripts/slurm_local.sh: Debian's slurm-wlm + munge) under real sweeps.

Every job is a real sbatch job of hydra-submitit-launcher (`hydra/launcher=slurm_cpu`); time limits,
signals and requeues are SLURM's own. Waits poll files, exit codes and SLURM's job states, never a
fixed sleep. Skipped only where the cluster cannot be made: not root, or neither SLURM nor apt-get.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from warmup_lab import runs
from warmup_lab.paths import REPO_ROOT
from warmup_lab.summary import read_summary

pytestmark = pytest.mark.slow

SCRIPT = REPO_ROOT / "scripts" / "slurm_local.sh"
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
TINY = ["task=reverse", "train.batch_size=8", "train.eval_batches=1", "train.eval_every=0", "train.progress=false",
        "threads=1", "logger=none"]
SLURM = ["hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def cluster():
    """The cluster, started for this module and stopped after it (left alone if it was already up)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: scripts/slurm_local.sh installs slurm-wlm and munge and starts their daemons")
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    start = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    assert start.returncode == 0, start.stdout + start.stderr
    yield
    if not was_up:
        stop = subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr


def _train(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "warmup_lab.train", "-m", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out[-3000:] + err[-3000:]


def _until(ok: Callable[[], bool], what: str, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    """Poll a state (a file, a SLURM job state) until `ok()`; fail naming `what` on timeout or a dead launcher."""
    end = time.monotonic() + timeout
    while not ok():
        assert proc is None or proc.poll() is None, f"launcher exited before {what}: " + _finish(proc)[1]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def _jobs() -> dict[str, str]:
    """SLURM job id -> state, for every job the controller still knows (MinJobAge keeps finished ones)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True, check=True)
    return dict(line.split() for line in out.stdout.splitlines())


def _scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def _steps(run_dir: Path) -> list[int]:
    with (run_dir / runs.METRICS_FILE).open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def _run_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if (d / runs.CONFIG_FILE).exists())


def _summary_status(root: Path) -> str | None:
    summaries = [read_summary(d) for d in _run_dirs(root)] if root.exists() else []
    return summaries[0].get("status") if len(summaries) == 1 and summaries[0] else None


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    now = most = 0
    for _, delta in events:
        now += delta
        most = max(most, now)
    return most


def test_an_array_of_20_runs_at_parallelism_2_completes_and_the_report_reads_it(cluster, tmp_path):
    root = tmp_path / "sweep"
    args = [*TINY, *SLURM, "train.steps=10", "seed=0,1,2,3,4", "optimizer.lr=1e-3,2e-3,4e-3,8e-3",
            "hydra.launcher.array_parallelism=2", f"runs_root={root}"]
    code, said = _finish(_train(args, tmp_path))
    assert code == 0, said
    dirs = _run_dirs(root)
    summaries = [read_summary(d) for d in dirs]
    assert len(dirs) == 20 and all(s["status"] in runs.FINISHED_STATUSES for s in summaries), summaries
    assert all(_steps(d) == list(range(10)) for d in dirs)
    (job,) = {p.name.split("_")[0] for p in root.glob(".submitit/*/*_submitted.pkl")}  # one array job
    assert _scontrol(f"{job}_0")["ArrayTaskThrottle"] == "2"
    tasks = {p.name.split("_")[1] for p in root.glob(f".submitit/*/{job}_*_submitted.pkl")}
    assert tasks == {str(i) for i in range(20)}
    spans = [((d / runs.CONFIG_FILE).stat().st_mtime, (d / runs.SUMMARY_FILE).stat().st_mtime) for d in dirs]
    assert _max_overlap(spans) <= 2, spans
    report = subprocess.run([sys.executable, "-m", "warmup_lab.report", str(root), "--out", str(tmp_path / "report")],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (tmp_path / "report" / "report.md").read_text()
    assert "reverse" in table and "20" in table


def test_a_job_at_its_time_limit_checkpoints_is_requeued_and_resumes_each_step_once(cluster, tmp_path):
    """USR2 `signal_delay_s` before the limit -> checkpoint -> submitit requeues -> the run resumes."""
    root = tmp_path / "sweep"
    # slurmctld checks time limits every 30 s, so the signal can come up to ~30 s after the update: the run
    # must outlast that on an idle machine (4000 steps took 17 s here and finished first; 24000 take ~100 s).
    steps = 24000
    args = [*TINY, *SLURM, f"train.steps={steps}", "hydra.launcher.timeout_min=5",
            "hydra.launcher.signal_delay_s=60", f"runs_root={root}"]
    proc = _train(args, tmp_path)
    _until(lambda: any(root.glob(f"*/{runs.METRICS_FILE}")), "the run's first steps", proc)
    (job,) = [j for j, state in _jobs().items() if state == "RUNNING"]
    # The limit falls to 1 minute, which is within signal_delay_s: SLURM's next time-limit check sends USR2.
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=1"], check=True)
    _until(lambda: _summary_status(root) == runs.PREEMPTED, "the checkpoint at the time-limit signal", proc)
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)  # room to finish
    code, said = _finish(proc)
    assert code == 0, said
    (run_dir,) = _run_dirs(root)
    summary = read_summary(run_dir)
    assert summary["status"] == runs.COMPLETED and 0 < summary["resumed_from"] < steps, summary
    assert _steps(run_dir) == list(range(steps))
    logs = "".join(p.read_text() for p in root.glob(".submitit/*/*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs, logs[-3000:]
    assert f"from step {summary['resumed_from']}" in logs
    assert int(_scontrol(job)["Restarts"]) == 1


def test_scancel_term_leaves_a_preempted_run_that_the_same_command_resumes(cluster, tmp_path):
    root = tmp_path / "sweep"
    steps = 3000
    args = [*TINY, *SLURM, f"train.steps={steps}", f"runs_root={root}"]
    proc = _train(args, tmp_path)
    _until(lambda: any(root.glob(f"*/{runs.METRICS_FILE}")), "the run's first steps", proc)
    (job,) = [j for j, state in _jobs().items() if state == "RUNNING"]
    subprocess.run(["scancel", "--signal=TERM", job], check=True)
    code, said = _finish(proc)
    assert code != 0 and "preempted" in said, said  # the sweep ends; it does not wait forever for the job
    (run_dir,) = _run_dirs(root)
    stopped = read_summary(run_dir)
    assert stopped["status"] == runs.PREEMPTED and stopped["signal"] == "SIGTERM", stopped
    assert _steps(run_dir) == list(range(stopped["checkpoint_step"]))
    code, said = _finish(_train(args, tmp_path))
    assert code == 0, said
    done = read_summary(run_dir)
    assert done["status"] == runs.COMPLETED and done["resumed_from"] == stopped["checkpoint_step"], done
    assert _steps(run_dir) == list(range(steps))


SEARCH = ["hydra/sweeper=max_stable_lr", *TINY, "train.steps=20", "train.checkpoint_every=0", "hydra.sweeper.seeds=[0,1]",
          "hydra.sweeper.start_lr=0.01", "hydra.sweeper.resolution=2", "hydra.sweeper.bracket_factor=4",
          "hydra.sweeper.max_lr=10"]


def _eta_max(root: Path) -> list[dict[str, str]]:
    with (root / "eta_max.csv").open(newline="") as fh:
        return [{k: row[k] for k in ("criterion", "seed", "eta_max", "lo", "hi", "censored", "n_probes")}
                for row in csv.DictReader(fh)]


def test_the_max_stable_lr_search_runs_its_rounds_as_arrays_and_agrees_with_joblib2(cluster, tmp_path):
    local, cluster_root = tmp_path / "joblib2", tmp_path / "slurm"
    code, said = _finish(_train([*SEARCH, "hydra/launcher=joblib2", f"runs_root={local}"], tmp_path))
    assert code == 0, said
    code, said = _finish(_train([*SEARCH, *SLURM, f"runs_root={cluster_root}"], tmp_path))
    assert code == 0, said
    assert _eta_max(cluster_root) == _eta_max(local)
    report = json.loads((cluster_root / "search.json").read_text())
    probes = [p for s in report["settings"] for seed in s["seeds"] for p in seed["probes"]]
    per_round = sorted(sum(p["round"] == r for p in probes) for r in range(1, report["rounds"] + 1))
    tasks: dict[str, int] = {}
    for pkl in cluster_root.glob(".submitit/*/*_submitted.pkl"):
        job = pkl.name.split("_")[0]
        tasks[job] = tasks.get(job, 0) + 1
    assert sorted(tasks.values()) == per_round and max(per_round) > 1  # one SLURM array per round
