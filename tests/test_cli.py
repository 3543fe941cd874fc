"""Bad input on the command line: one line naming the value and the options, a non-zero exit."""

from __future__ import annotations

import sys

import pytest

from conftest import FAST, make_cfg, run_cli
from warmup_lab.cli import check_group_choices, check_override_form, hydra_overrides
from warmup_lab.errors import EXIT_CONFIG, ConfigError
from warmup_lab import runs
from warmup_lab.job import train


def test_known_choices_sweeps_and_plugin_groups_pass():
    check_group_choices(["schedule=linear_cosine,wsd", "task=digits", "experiment=warmup_ablation/resnet",
                         "hydra/launcher=joblib", "optimizer.lr=1e-3", "-m", "seed=0,1", "+arm=resnet_sgd"])


def test_an_unknown_choice_names_the_value_and_the_options():
    with pytest.raises(ConfigError, match=r"schedule='nope' is invalid: one of .*linear_cosine.*conf/schedule/"):
        check_group_choices(["schedule=linear_cosine,nope"])


@pytest.mark.slow
@pytest.mark.parametrize("module", ["warmup_lab.train", "warmup_lab.lr_curve"])
def test_the_cli_prints_one_line_and_exits_2(tmp_path, module):
    proc = run_cli(module, ["schedule=nope"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "schedule='nope'" in lines[0] and "linear_cosine" in lines[0], proc.stderr


def test_a_corrupt_checkpoint_is_kept_aside_and_the_run_restarts(tmp_path):
    cfg = make_cfg(["task=modadd", *FAST])
    whole = train(cfg, tmp_path / "whole")
    run_dir = tmp_path / "run"
    runs.write_config(run_dir, cfg)  # a directory without its config.yaml is never reused
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (run_dir / "metrics.csv").write_text("step,loss,lr,grad_norm,spike\n0,9,0,1,0\n")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        summary = train(cfg, run_dir)
    assert summary["final_train_loss"] == whole["final_train_loss"] and summary["resumed_from"] is None
    assert (run_dir / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
    assert [p.name.startswith("checkpoint.pt.corrupt-") for p in run_dir.iterdir()].count(True) == 1


@pytest.mark.slow
def test_warmup_lab_help_lists_every_subcommand(tmp_path):
    proc = run_cli("warmup_lab", ["--help"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["train", "sweep", "search", "report", "lr-curve", "lr-find", "advise"]


@pytest.mark.slow
def test_an_unknown_subcommand_is_one_line_naming_the_choices(tmp_path):
    proc = run_cli("warmup_lab", ["trian"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "command='trian'" in proc.stderr and "train, sweep, search" in proc.stderr


@pytest.mark.slow
def test_warmup_lab_train_runs_and_checks_group_choices_first(tmp_path):
    proc = run_cli("warmup_lab", ["train", "task=modadd", *FAST, f"out={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").exists()
    bad = run_cli("warmup_lab", ["train", "schedule=nope"], cwd=tmp_path)
    assert bad.returncode == 2 and "schedule='nope'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("rest, expected", [
    (["task=digits"], ["-m", "hydra/sweeper=max_stable_lr", "task=digits"]),
    (["--multirun", "task=digits"], ["hydra/sweeper=max_stable_lr", "--multirun", "task=digits"]),
    (["-m", "hydra/sweeper=basic"], ["-m", "hydra/sweeper=basic"]),
])
def test_search_is_a_train_multirun_with_the_max_stable_lr_sweeper(monkeypatch, rest, expected):
    from warmup_lab import cli

    seen = []
    monkeypatch.setattr(cli, "_load", lambda target: lambda: seen.append((target, list(sys.argv))))
    monkeypatch.setattr(sys, "argv", ["warmup-lab"])
    assert cli.main(["search", *rest]) == 0
    assert seen == [("warmup_lab.cli:train_main", ["warmup-lab search", *expected])]


def test_hydras_own_override_forms_and_its_flags_values_pass_as_overrides():
    argv = ["--cfg", "job", "-p", "model", "+a=1", "++b=2", "~c", "~d=3", "-m", "e=1,2", "--multirun", "-cn",
            "train", "--info", "config", "f='x y'"]
    assert hydra_overrides(argv) == ["+a=1", "++b=2", "~c", "~d=3", "e=1,2", "f='x y'"]
    check_override_form(hydra_overrides(argv))


@pytest.mark.parametrize("argv", [["task=digits", "oops"], ["oops", "task=digits"], ["task=digits", "-m", "oops"],
                                  ["--cfg", "job", "task=digits", "oops"], ["+oops"]])
def test_a_stray_word_in_a_hydra_command_line_is_found(argv):
    with pytest.raises(ConfigError, match=r"override='\+?oops' is invalid: not KEY=VALUE \(a stray word\?"):
        check_override_form(hydra_overrides(argv))


@pytest.mark.parametrize("command", [
    ["train", "task=digits", "oops"],
    ["search", "task=digits", "oops"],
    ["lr-curve", "oops"],
    ["lr-find", "task=digits", "oops"],
    ["advise", "task=digits", "--budget", "10", "runs"],
    ["sweep", "default", "oops"],
])
def test_every_command_answers_a_stray_word_with_one_line_exit_2_and_writes_nothing(command, tmp_path, monkeypatch,
                                                                                     capsys):
    from warmup_lab import cli
    from warmup_lab.lifecycle import LAUNCHER_PID_ENV

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["warmup-lab"])
    monkeypatch.setenv(LAUNCHER_PID_ENV, "none")  # train sets it to this process: put back afterwards
    with pytest.raises(SystemExit) as stop:
        cli.main(command)
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_CONFIG and err.count("\n") == 1, err
    assert err.startswith(f"error: override={command[-1]!r} is invalid: not KEY=VALUE (a stray word? ") and \
        "--budget 10runs, not --budget 10 runs" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_split_option_value_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("warmup_lab", ["advise", "task=digits", "--budget", "10", "runs"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "override='runs'" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
