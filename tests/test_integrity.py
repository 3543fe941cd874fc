"""Integrity, round 2 (issue 15): each case of the issue, through the real trainer and CLI.

Corruptions: nothing mixed, duplicated or lost. Silently wrong: refused with one line, or correct.
Tracebacks: one line naming the value and the fix, non-zero exit. docs/reliability.md lists each case.
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, make_cfg, run_cli
from warmup_lab import runs
from warmup_lab.errors import EXIT_CONFIG, ConfigError, DataMissingError
from warmup_lab.job import train
from warmup_lab.summary import read_summary
from warmup_lab.trainer import validate

KEEP = ["task=modadd", *FAST, "train.checkpoint_every=3", "train.keep_checkpoint=true"]  # checkpoint at step 3
CLI = ["task=reverse", "logger=none", "train.progress=false", "threads=1", "train.batch_size=8", "train.eval_batches=1"]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def _steps(run_dir: Path) -> list[int]:
    with (run_dir / runs.METRICS_FILE).open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture
def whole(tmp_path):
    """An uninterrupted run of KEEP, and a second copy of it stopped after its checkpoint at step 3."""
    cfg = make_cfg(KEEP)
    reference = train(cfg, tmp_path / "whole")
    stopped = tmp_path / "stopped"
    train(cfg, stopped)
    (stopped / runs.SUMMARY_FILE).unlink()  # what a run killed after step 5 leaves, less its last rows
    return cfg, reference, stopped


# -- silently wrong: every key read or refused, flags strictly parsed ---------------------------------
@pytest.mark.parametrize("override", ["+train.dtype=bfloat16", "+model.dtype=float16", "+foo=1", "+data.foo=1",
                                      "+detect.spike.foo=1", "+sharpness.foo=1", "+task.foo=1", "+logger.foo=1"])
def test_a_key_nothing_reads_is_refused_naming_it(override):
    key = override[1:].split("=")[0]
    with pytest.raises(ConfigError, match=f"^{key}=.*unknown key: nothing reads it"):
        validate(make_cfg([override]))


@pytest.mark.parametrize("override, key, expected", [
    ("model.qk_layernorm=maybe", "model.qk_layernorm", "true or false"),
    ("train.keep_checkpoint=1", "train.keep_checkpoint", "true or false"),
    ("logger.mode=onlin", "logger.mode", "auto, online, offline, disabled"),
    ("train.full_batch=true", "train.full_batch", "drop train.full_batch"),
])
def test_flags_choices_and_full_batch_on_a_sequence_task_are_refused(override, key, expected):
    with pytest.raises(ConfigError, match=f"^{key}=.*{expected}"):
        validate(make_cfg([override]))


def test_keys_of_a_plug_in_task_or_model_are_the_users_own():
    validate(make_cfg(["task=custom", "task._target_=my.build", "+task.hidden=8", "+data.rows=3"]))
    validate(make_cfg(["task=digits", "model=custom", "model._target_=my.Net", "+model.dim=16"]))


def test_unset_threads_are_resolved_before_hashing_and_recorded(tmp_path):
    cfg, before = make_cfg(["task=modadd", *FAST]), torch.get_num_threads()
    assert cfg.threads is None
    try:
        hashes = []
        for n in (1, 2):  # what OMP_NUM_THREADS=1 / =2 make torch's default
            torch.set_num_threads(n)
            hashes.append(runs.config_hash(cfg))
            runs.write_config(tmp_path / str(n), cfg)
            assert "threads: %d\n" % n in (tmp_path / str(n) / runs.CONFIG_FILE).read_text()
        assert hashes[0] != hashes[1]
        with pytest.raises(ConfigError, match="threads=1 there, 2 here"):
            runs.check_same_config(tmp_path / "1", cfg)  # torch's default is 2 now
    finally:
        torch.set_num_threads(before)


# -- corruptions: a directory without config.yaml, a changed data file -------------------------------
def test_a_directory_without_its_config_yaml_is_never_reused(whole, tmp_path):
    cfg, _, _ = whole
    done = tmp_path / "whole"
    (done / runs.CONFIG_FILE).unlink()
    before = {p.name: p.read_bytes() for p in done.iterdir()}
    for overrides in (KEEP, [*KEEP, "optimizer.lr=3e-3"]):  # neither the same config nor another one
        with pytest.raises(ConfigError, match="but no config.yaml.*nothing was touched"):
            train(make_cfg(overrides), done)
    assert {p.name: p.read_bytes() for p in done.iterdir()} == before


def test_an_edited_text_file_is_never_resumed(tmp_path, text_file):
    overrides = ["task=charlm", f"data.path={text_file}", "data.block_size=16", *FAST, "train.checkpoint_every=3",
                 "train.keep_checkpoint=true", f"runs_root={tmp_path / 'runs'}"]
    first = runs.run_dir_for(make_cfg(overrides))
    train(make_cfg(overrides), first)
    (first / runs.SUMMARY_FILE).unlink()  # killed after its checkpoint
    text_file.write_text(text_file.read_text().replace("fox", "cat"))
    with pytest.raises(ConfigError, match=r"^data.path=.*content changed since the run .* restore the file"):
        train(make_cfg(overrides), first)  # out= on that directory
    assert runs.run_dir_for(make_cfg(overrides)) != first  # under runs_root: another run, from step 0


def test_a_fifo_as_data_path_is_called_a_fifo_not_missing(tmp_path):
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    with pytest.raises(DataMissingError, match="is not a regular file"):
        train(make_cfg(["task=charlm", f"data.path={fifo}", *FAST]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- metrics.csv torn or missing, a checkpoint that does not fit ---------------------------------------
def _cut(path: Path, keep_lines: int, extra: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:keep_lines]) + extra)


def test_a_torn_last_row_is_repaired_and_the_resume_matches(whole, tmp_path):
    cfg, reference, stopped = whole
    _cut(stopped / runs.METRICS_FILE, 6, "5,2.3")  # header, steps 0-4, half of step 5
    (stopped / runs.EVAL_FILE).unlink()  # rebuilt from the checkpoint's evaluations
    summary = train(cfg, stopped)
    assert summary["resumed_from"] == 3 and summary["final_train_loss"] == reference["final_train_loss"]
    for name in (runs.METRICS_FILE, runs.EVAL_FILE):
        assert (stopped / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.unlink(), "metrics.csv is missing"),
    (lambda p: _cut(p, 0, "step,lo"), "metrics.csv holds 0 of the 3 steps"),  # a torn header
    (lambda p: _cut(p, 2, ""), "metrics.csv holds 1 of the 3 steps"),
])
def test_missing_metrics_rows_redo_the_run_never_leave_a_gap(whole, tmp_path, damage, reason):
    cfg, reference, stopped = whole
    damage(stopped / runs.METRICS_FILE)
    with pytest.warns(UserWarning, match=f"unusable checkpoint .*{reason}"):
        summary = train(cfg, stopped)
    assert summary["resumed_from"] is None and _steps(stopped) == list(range(6))
    assert summary["peak_lr"] == reference["peak_lr"] and summary["final_train_loss"] == reference["final_train_loss"]


def test_a_checkpoint_of_another_model_is_set_aside_with_the_reason(whole, tmp_path):
    cfg, reference, stopped = whole
    state = torch.load(stopped / runs.CHECKPOINT_FILE, weights_only=False)
    name = next(iter(state["model"]))
    state["model"][f"renamed.{name}"] = state["model"].pop(name)  # as after a refactor
    torch.save(state, stopped / runs.CHECKPOINT_FILE)
    with pytest.warns(UserWarning, match=f"unusable checkpoint .*does not fit the model.*{name}"):
        summary = train(cfg, stopped)
    assert summary["resumed_from"] is None and summary["final_train_loss"] == reference["final_train_loss"]
    assert [p.name.startswith(runs.CHECKPOINT_FILE + ".corrupt-") for p in stopped.iterdir()].count(True) == 1


# -- one line instead of a traceback ---------------------------------------------------------------------
@pytest.mark.parametrize("where", ["file", "below a file"])
def test_out_naming_a_file_is_one_line(tmp_path, where):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" if where == "file" else tmp_path / "notes.txt" / "run"
    with pytest.raises(ConfigError, match="notes.txt is a file, not a directory"):
        train(make_cfg(["task=modadd", *FAST]), out)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_file_size_limit_at_the_checkpoint_is_one_line_and_a_rerun_finishes(tmp_path):
    """`ulimit -f`: the checkpoint (about 1.3 MB) passes the limit, the CSVs and config do not."""
    out, args = tmp_path / "run", [*CLI, "train.steps=20", "train.checkpoint_every=5"]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = run_cli("warmup_lab.train", [*args, f"out={out}"], cwd=tmp_path, preexec_fn=limit)
    line = _one_line(proc)
    assert proc.returncode == EXIT_CONFIG and "File too large" in line and "ulimit -f" in line, line
    assert read_summary(out)["status"] == runs.ERROR and not list(out.glob("*.tmp"))
    again = run_cli("warmup_lab.train", [*args, f"out={out}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _steps(out) == list(range(20))


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "warmup_lab.train", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("removed", ["lock", "directory"])
def test_a_writer_whose_lock_or_directory_is_taken_stops_and_steps_stay_single(tmp_path, removed):
    out = tmp_path / "run"
    args = [*CLI, "train.steps=1500", "train.checkpoint_every=10", "train.eval_every=0", f"out={out}"]
    first = _start(args, tmp_path)
    while not (out / runs.CHECKPOINT_FILE).exists():  # the first writer is under way
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    if removed == "lock":
        (out / runs.LOCK_FILE).unlink()
    else:  # as a user would: removed while the writer still adds files, so remove until it is gone
        while out.exists():
            shutil.rmtree(out, ignore_errors=True)
    second = _start(args, tmp_path)
    _, err = first.communicate(timeout=600)
    assert first.returncode == EXIT_CONFIG and "stopped without writing more" in err and "Traceback" not in err, err
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert _steps(out) == list(range(1500)) and read_summary(out)["steps_run"] == 1500


# -- unclear cases ---------------------------------------------------------------------------------------
def test_a_copied_finished_run_reports_its_own_path(tmp_path, capsys):
    cfg = make_cfg(["task=modadd", *FAST])
    train(cfg, tmp_path / "first")
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    assert train(cfg, tmp_path / "copy")["run_dir"] == str(tmp_path / "copy")
    assert f"skip: {tmp_path / 'copy'}" in capsys.readouterr().out


def test_an_unquoted_non_ascii_value_gets_the_hint_to_quote_it():
    from warmup_lab.cli import check_quoting

    with pytest.raises(ConfigError, match=r"""^out='/tmp/ré' .*write out='"/tmp/ré"'"""):
        check_quoting(["task=modadd", "out=/tmp/ré"])
    check_quoting(["task=modadd", 'out="/tmp/ré"'])  # quoted: Hydra takes it


def test_report_out_naming_a_file_is_one_line(tmp_path, capsys):
    from warmup_lab import report

    train(make_cfg(["task=modadd", *FAST]), tmp_path / "sweep" / "run")
    (tmp_path / "table.md").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "table.md")])
    line = capsys.readouterr().err.strip()
    assert stop.value.code == EXIT_CONFIG and "table.md" in line and "set --out to a directory" in line, line
    assert (tmp_path / "table.md").read_text() == "mine"


@pytest.mark.slow
def test_a_multirun_into_a_read_only_runs_root_is_one_line(tmp_path, immutable_dir):
    proc = run_cli("warmup_lab.train", ["-m", *CLI, "train.steps=2", "seed=0,1", f"runs_root={immutable_dir / 'runs'}"],
                   cwd=tmp_path)
    line = _one_line(proc)
    assert proc.returncode == EXIT_CONFIG and "runs_root=" in line and str(immutable_dir) in line, line


@pytest.mark.slow
def test_a_multirun_under_ulimit_n_16_is_one_line(tmp_path):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))

    proc = run_cli("warmup_lab.train", ["-m", *CLI, "train.steps=2", "seed=0,1", "hydra/launcher=joblib2",
                                        f"runs_root={tmp_path / 'runs'}"], cwd=tmp_path, preexec_fn=limit)
    line = _one_line(proc)
    assert proc.returncode == EXIT_CONFIG and "ulimit -n=16" in line and "ulimit -n 1024" in line, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_search_with_max_rounds_0_is_refused(tmp_path):
    proc = run_cli("warmup_lab.train", ["-m", "hydra/sweeper=max_stable_lr", "hydra.sweeper.max_rounds=0", *CLI,
                                        "train.steps=2", f"runs_root={tmp_path / 'runs'}"], cwd=tmp_path)
    line = _one_line(proc)
    assert proc.returncode == EXIT_CONFIG and "max_rounds=0" in line, line
