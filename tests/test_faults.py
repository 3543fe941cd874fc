"""Faults and bad input of issue 9, each reproduced through the real CLI or real processes.

Numbers in test names are the issue's cases (docs/reliability.md lists every fault with its test).
Corruption: metrics.csv has each step exactly once and the summary matches the requested config.
Refusals: a non-zero exit, one line naming the key or path, and no run directory left behind.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from conftest import FAST, make_cfg, run_cli
from warmup_lab import runs
from warmup_lab.errors import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_PREEMPTED, ConfigError, DataMissingError
from warmup_lab.paths import CONF_DIR
from warmup_lab.job import train
from warmup_lab.trainer import validate

BASE = ["task=reverse", "train.steps=20", "logger=none", "train.progress=false", "threads=1",
        "train.batch_size=8", "train.eval_batches=1"]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def _steps(run_dir: Path, name: str = runs.METRICS_FILE) -> list[int]:
    with (run_dir / name).open(newline="") as fh:
        return [int(float(row["step"])) for row in csv.DictReader(fh)]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / runs.SUMMARY_FILE).read_text())


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir() if p.is_file()}


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "warmup_lab.train", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def _wait_for_checkpoints(root: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until `n` runs under `root` have a checkpoint: each is then inside its training loop (a state, not a sleep)."""
    end = time.monotonic() + timeout
    while len(list(root.glob(f"*/{runs.CHECKPOINT_FILE}"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{n} checkpoints never appeared under {root}"
        time.sleep(0.05)


# -- 1. data corrupted, exit 0 ------------------------------------------------------------------
@pytest.mark.slow
def test_1_a_rerun_without_summary_starts_over_and_writes_each_step_once(tmp_path):
    out = tmp_path / "run"
    first = run_cli("warmup_lab.train", [*BASE, f"out={out}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    metrics, evals, before = (out / runs.METRICS_FILE).read_text(), (out / runs.EVAL_FILE).read_text(), _summary(out)
    (out / runs.SUMMARY_FILE).unlink()
    again = run_cli("warmup_lab.train", [*BASE, f"out={out}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _steps(out) == list(range(20)) and (out / runs.METRICS_FILE).read_text() == metrics
    assert (out / runs.EVAL_FILE).read_text() == evals
    assert _summary(out)["final_train_loss"] == before["final_train_loss"]


@pytest.mark.slow
def test_2_two_processes_on_one_run_dir_give_one_intact_result(tmp_path):
    args = [*BASE, "train.steps=300", f"runs_root={tmp_path / 'runs'}"]
    procs = [_popen(args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert _steps(run_dir) == list(range(300))
    said = "".join(o for o, _ in outs)
    assert said.count("wait:") == 1 and said.count("skip:") == 1, said  # one trained; one waited, then skipped


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_2_workers_stop_with_their_killed_sweep_and_a_rerun_has_each_run_once(tmp_path):
    """SIGKILL of the joblib launcher's process: its loky workers checkpoint and exit, nothing races the re-run."""
    root = tmp_path / "runs"
    args = ["-m", *BASE, "train.steps=1500", f"runs_root={root}", "hydra/launcher=joblib2", "seed=0,1"]
    proc = _popen(args, tmp_path)
    end = time.monotonic() + 240
    _wait_for_checkpoints(root, 2, proc)  # both workers are training (checkpoint_every defaults to 50)
    workers = _children(proc.pid)
    proc.kill()
    proc.communicate()
    while any(map(_alive, workers)):
        assert time.monotonic() < end, f"workers {workers} outlived their sweep"
        time.sleep(0.2)
    stopped = [_summary(d) for d in sorted(root.iterdir()) if d.is_dir()]
    assert [s["status"] for s in stopped] == [runs.PREEMPTED] * 2, stopped
    rerun = subprocess.run([sys.executable, "-m", "warmup_lab.train", *args], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    for run_dir in (d for d in root.iterdir() if d.is_dir()):
        assert _steps(run_dir) == list(range(1500)) and _summary(run_dir)["status"] == runs.COMPLETED


@pytest.mark.slow
def test_2_sigterm_to_the_sweep_script_stops_hydra_and_every_worker(tmp_path):
    """`warmup-lab sweep` (make sweep) runs Hydra in its own process group and forwards the signal to all of it."""
    root = tmp_path / "runs"
    extra = [f"runs_root={root}", "train.steps=3000", "train.checkpoint_every=50", "logger=none",
             "warmup_setting=linear@30", "optimizer.lr=1e-3,2e-3"]
    code = ("import sys; from warmup_lab import sweep; "
            f"sys.exit(sweep.run_preset('warmup_ablation/transformer', 'preset', {extra!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 240
    _wait_for_checkpoints(root, 2, proc)  # both workers are training
    (hydra_main,) = _children(proc.pid)
    family = [hydra_main, *_children(hydra_main)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == EXIT_PREEMPTED and "sweep stopped by SIGTERM" in err, err
    while any(map(_alive, family)):
        assert time.monotonic() < end, f"{family} outlived the sweep"
        time.sleep(0.2)
    stopped = [_summary(d) for d in root.iterdir() if (d / runs.SUMMARY_FILE).exists()]
    assert len(stopped) == 2 and {s["status"] for s in stopped} == {runs.PREEMPTED}, stopped


@pytest.mark.slow
@pytest.mark.parametrize("change", ["optimizer.lr=0.01", "model.d_model=32"])
def test_3_out_reused_by_another_config_is_refused_and_nothing_is_touched(tmp_path, change):
    out = tmp_path / "run"
    assert run_cli("warmup_lab.train", [*BASE, f"out={out}"], cwd=tmp_path).returncode == 0
    (out / runs.SUMMARY_FILE).unlink()  # unfinished: the old code resumed or overwrote it
    before = _snapshot(out)
    proc = run_cli("warmup_lab.train", [*BASE, f"out={out}", change], cwd=tmp_path)
    line = _one_line(proc)
    assert proc.returncode == EXIT_CONFIG and "another config" in line and change.split("=")[0] in line, line
    assert _snapshot(out) == before


@pytest.mark.slow
def test_3_a_multirun_with_a_fixed_out_is_refused(tmp_path):
    proc = run_cli("warmup_lab.train", ["-m", *BASE, f"out={tmp_path / 'run'}", "optimizer.lr=1e-3,1e-2"], cwd=tmp_path)
    assert proc.returncode == EXIT_CONFIG and "multirun" in _one_line(proc)
    assert list(tmp_path.iterdir()) == []


# -- 4, 8, 9. every key read by something; bad values are one line ------------------------------
REFUSED = [
    ("+optimizer.lrr=1", "optimizer.lrr", "betas"),
    ("schedule.gamma=0.5", "schedule.gamma", "decay=step"),
    ("schedule=none_constant schedule.warmup_steps=10", "schedule.warmup_steps", "warmup=none"),
    ("train.steps=20.9", "train.steps", "integer"),
    ("train.steps=ten", "train.steps", "integer"),
    ("threads=-1", "threads", "integer >= 1"),
    ("device=tpu", "device", "cuda:<index>"),
    ("optimizer.lr=inf", "optimizer.lr", "finite"),
    ("optimizer.lr=fast", "optimizer.lr", "a number"),
]


@pytest.mark.parametrize("override,key,expected", REFUSED)
def test_4_8_9_bad_values_are_refused_at_config_time(tmp_path, override, key, expected):
    """In-process: the same train() the CLI calls, on the real Hydra composition; nothing is created."""
    root = tmp_path / "runs"
    with pytest.raises(ConfigError) as err:
        train(make_cfg([*BASE, *override.split(), f"runs_root={root}"]))
    assert err.value.field == key and expected in str(err.value) and "\n" not in str(err.value)
    assert not root.exists()


@pytest.mark.slow
def test_4_8_a_refusal_through_the_cli_is_one_line_and_leaves_no_directory(tmp_path):
    proc = run_cli("warmup_lab.train", [*BASE, "+optimizer.lrr=1"], cwd=tmp_path)
    assert proc.returncode == EXIT_CONFIG and "optimizer.lrr" in _one_line(proc)
    assert list(tmp_path.iterdir()) == []


def test_4_every_schedule_and_experiment_preset_still_composes():
    """Every schedule preset, and every experiment preset at every warmup setting its grid sweeps."""
    validated: dict[str, list[str]] = {}
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for path in sorted((CONF_DIR / "schedule").glob("*.yaml")):
            if not path.name.startswith("_"):
                validate(compose("train", overrides=[f"schedule={path.stem}", "logger=none"]))
        for path in sorted((CONF_DIR / "experiment").glob("*/*.yaml")):
            exp = f"experiment={path.parent.name}/{path.stem}"
            cfg = compose("train", overrides=[exp], return_hydra_config=True)
            swept = OmegaConf.select(cfg, "hydra.sweeper.params.warmup_setting")
            validated[exp] = str(swept).split(",") if swept is not None else []
            with open_dict(cfg):
                del cfg["hydra"]  # what compose() leaves without return_hydra_config
            validate(cfg)
            for setting in validated[exp]:  # as the sweep's override does: the schedule keys follow by ${pick:}
                cfg.warmup_setting = setting
                assert cfg.schedule.warmup == setting.split("@")[0], (exp, setting)
                validate(cfg)
    # the swept values, not the presets' single defaults, were checked (a first-match parser read `none@0`)
    for part in ("pre_vs_post_ln", "warmup_range"):
        assert len(validated[f"experiment=mechanisms/{part}"]) > 1 and "none@0" in validated[f"experiment=mechanisms/{part}"]


def test_5_threads_is_part_of_the_config_hash_and_of_the_check():
    one, two = (make_cfg([*BASE, f"threads={n}"]) for n in (1, 2))
    assert runs.config_hash(one) != runs.config_hash(two)


def test_5_a_resume_with_other_threads_is_refused(tmp_path):
    train(make_cfg([*BASE, "train.steps=4"]), tmp_path / "run")
    with pytest.raises(ConfigError, match="threads=1 there, 2 here"):
        train(make_cfg([*BASE, "train.steps=4", "threads=2"]), tmp_path / "run")


@pytest.mark.parametrize("content,expected", [
    (b"\x00\x01\x02binary" * 100, "binary file"),
    ("caf\u00e9 ".encode("latin-1") * 100, "not UTF-8"),
    (b"", "is empty"),
    (None, "is a directory"),
])
def test_9_unusable_charlm_files_say_what_is_wrong(tmp_path, content, expected):
    path = tmp_path / "data"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(DataMissingError, match=expected):
        train(make_cfg(["task=charlm", f"data.path={path}", *FAST]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_9_a_short_text_file_names_both_fixes(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 5)
    with pytest.raises(ConfigError, match="lower data.block_size or use a file of more than"):
        train(make_cfg(["task=charlm", f"data.path={path}", *FAST]), tmp_path / "run")


# -- 6. W&B never costs the results or the clock ------------------------------------------------
@pytest.mark.slow
def test_6_unreachable_online_wandb_falls_back_to_offline_in_the_run_dir(tmp_path):
    out = tmp_path / "run"
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "warmup_lab.train", *BASE, "logger=wandb", "logger.init_timeout=5",
                           f"out={out}"], cwd=tmp_path, env={**ENV, **env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("logging offline into") == 1, proc.stdout
    assert _summary(out)["wandb_mode"] == "offline"
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb")), "no offline copy to sync"


# -- 8. clean failures: disk full, read-only, Ctrl-C ---------------------------------------------
@pytest.mark.slow
def test_8_disk_full_at_a_checkpoint_is_one_line_an_error_summary_and_no_tmp(tmp_path):
    """/dev/full answers every write with ENOSPC: the checkpoint's temporary file is pointed at it."""
    out = tmp_path / "run"
    runs.write_config(out, make_cfg([*BASE, "train.checkpoint_every=5", f"out={out}"]))  # the run's own directory
    (out / (runs.CHECKPOINT_FILE + ".tmp")).symlink_to("/dev/full")
    proc = run_cli("warmup_lab.train", [*BASE, "train.checkpoint_every=5", f"out={out}"], cwd=tmp_path)
    line = _one_line(proc)
    assert proc.returncode == EXIT_CONFIG and "No space left on device" in line and "free space" in line, line
    assert _summary(out)["status"] == runs.ERROR
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    again = run_cli("warmup_lab.train", [*BASE, "train.checkpoint_every=5", f"out={out}"], cwd=tmp_path)
    assert again.returncode == 0 and _steps(out) == list(range(20))  # space again: from step 0, each step once


@pytest.mark.slow
def test_8_a_read_only_runs_root_is_one_line(tmp_path, immutable_dir):
    proc = run_cli("warmup_lab.train", [*BASE, f"runs_root={immutable_dir}"], cwd=tmp_path)
    line = _one_line(proc)
    assert proc.returncode == EXIT_CONFIG and str(immutable_dir) in line and "writable" in line, line


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run the signal tests resume to."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert run_cli("warmup_lab.train", [*BASE, "train.steps=600", f"out={out}"], cwd=out.parent).returncode == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,status", [(signal.SIGTERM, EXIT_PREEMPTED, runs.PREEMPTED),
                                             (signal.SIGUSR1, EXIT_PREEMPTED, runs.PREEMPTED),
                                             (signal.SIGINT, EXIT_INTERRUPTED, runs.INTERRUPTED)],
                         ids=["SIGTERM", "SIGUSR1", "SIGINT"])
def test_8_preemption_and_ctrl_c_checkpoint_at_the_step_and_resume_exactly(tmp_path, reference, sig, code, status):
    out = tmp_path / "run"
    args = [*BASE, "train.steps=600", f"out={out}"]
    proc = _popen(args, tmp_path)
    _wait_for(out / runs.CHECKPOINT_FILE, proc)  # inside the loop (before it a signal is the default action)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(status) and signal.Signals(sig).name in lines[0], err
    stopped = _summary(out)
    assert stopped["status"] == status and 0 < stopped["checkpoint_step"] < 600
    assert _steps(out) == list(range(stopped["checkpoint_step"]))
    resumed = run_cli("warmup_lab.train", args, cwd=tmp_path)
    assert resumed.returncode == 0 and f"from step {stopped['checkpoint_step']}" in resumed.stdout
    assert (out / runs.METRICS_FILE).read_text() == (reference / runs.METRICS_FILE).read_text()
    assert _summary(out)["final_train_loss"] == _summary(reference)["final_train_loss"]


@pytest.mark.slow
def test_8_submitit_preemption_checkpoints_requeues_and_resumes_exactly(tmp_path, reference):
    """hydra/launcher=submitit_local with the real submitit: USR2 (SLURM's warning) -> checkpoint -> requeue."""
    root = tmp_path / "runs"
    proc = _popen(["-m", *BASE, "train.steps=600", f"runs_root={root}", "hydra/launcher=submitit_local"], tmp_path)
    _wait_for_checkpoints(root, 1, proc)  # the job is training: USR2 now reaches our handler
    (controller,) = _children(proc.pid)  # submitit's local controller, whose child is the job
    (job,) = _children(controller)
    os.kill(job, signal.SIGUSR2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    (run_dir,) = root.glob(f"*/{runs.SUMMARY_FILE}")
    summary = _summary(run_dir.parent)
    assert summary["status"] == runs.COMPLETED and 0 < summary["resumed_from"] < 600
    logs = "".join(p.read_text() for p in root.glob(".submitit/*/*_log.*"))
    assert "Requeued job" in logs and f"from step {summary['resumed_from']}" in logs
    assert (run_dir.parent / runs.METRICS_FILE).read_text() == (reference / runs.METRICS_FILE).read_text()


# -- 10. clutter and permissions ----------------------------------------------------------------
@pytest.mark.slow
def test_10_out_creates_nothing_else_and_files_follow_the_umask(tmp_path):
    cwd, out = tmp_path / "cwd", tmp_path / "run"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "warmup_lab.train", *BASE, f"out={out}"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o002))
    assert proc.returncode == 0, proc.stderr
    assert list(cwd.iterdir()) == []
    for name in (runs.SUMMARY_FILE, runs.CONFIG_FILE, runs.METRICS_FILE):
        assert (out / name).stat().st_mode & 0o777 == 0o664, name
    curve = run_cli("warmup_lab.lr_curve", ["train.steps=10", f"out={tmp_path / 'curve'}"], cwd=cwd)
    assert curve.returncode == 0 and list(cwd.iterdir()) == []
