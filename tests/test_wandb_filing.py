"""W&B like a tidy project: every run's group, job_type and tags, read back from the offline run files."""

from __future__ import annotations

import pytest

from conftest import FAST, make_cfg, run_cli
from warmup_lab import runs
from warmup_lab.schedules import schedule_from_cfg
from warmup_lab.summary import read_summary
from warmup_lab.job import train
from wandb_io import find_run_files, read_run, wait_complete

TINY = ["task=modadd", *FAST, "logger=wandb"]


def _logged(run_dir) -> dict:
    (path,) = find_run_files(run_dir)
    assert wait_complete(path), f"W&B never finished writing {path}"
    return read_run(path)["run"]


def test_a_plain_run_is_a_train_job_grouped_by_its_name_and_tagged_with_its_setting(tmp_path):
    cfg = make_cfg([*TINY, "schedule=linear_cosine", "schedule.warmup_ratio=0.5"])
    train(cfg, tmp_path / "run")
    run = _logged(tmp_path / "run")
    assert run["job_type"] == "train" and run["group"] == cfg.name
    warmup = f"warmup:linear@{schedule_from_cfg(cfg).warmup_steps}"
    assert run["tags"] == ["task:modadd", "model:transformer", "optimizer:adamw", warmup]
    assert warmup != "warmup:linear@0"


def test_group_job_type_and_extra_tags_come_from_the_logger_keys(tmp_path):
    cfg = make_cfg([*TINY, "logger.group=my-advice", "logger.job_type=lr-find", "logger.tags=[mine]",
                    "experiment_name=ignored-when-group-is-set"])
    train(cfg, tmp_path / "run")
    run = _logged(tmp_path / "run")
    assert (run["group"], run["job_type"]) == ("my-advice", "lr-find")
    assert run["tags"][-1] == "mine" and run["tags"][0] == "task:modadd"


def test_a_preset_run_is_grouped_by_its_experiment(tmp_path):
    cfg = make_cfg([*TINY, "experiment_name=warmup_length"])
    train(cfg, tmp_path / "run")
    assert _logged(tmp_path / "run")["group"] == "warmup_length"


@pytest.mark.slow
def test_a_searchs_probes_are_probe_jobs_grouped_by_the_search(tmp_path):
    args = ["search", *TINY, "hydra.sweeper.seeds=[0,1]", "hydra.sweeper.max_rounds=1", f"runs_root={tmp_path / 'r'}",
            f"hydra.sweeper.out_dir={tmp_path / 'my_search'}"]
    proc = run_cli("warmup_lab", args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = runs.find_run_dirs([tmp_path / "r"])
    assert len(dirs) == 2
    for d in dirs:
        run = _logged(d)
        assert (run["job_type"], run["group"]) == ("probe", "my_search")
        assert read_summary(d)["sweep_group"] == "my_search"
