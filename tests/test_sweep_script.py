"""warmup_lab.sweep (`make sweep`): the default study's shape, and the core-time line it ends with."""

from __future__ import annotations

import os
import time

import pytest

from warmup_lab import runs, sweep
from warmup_lab.summary import write_summary


def test_the_default_study_covers_both_task_families_with_5_seeds_and_4_warmup_lengths():
    from hydra import compose, initialize_config_dir

    from warmup_lab.paths import CONF_DIR

    tasks = set()
    for name in sweep.DEFAULT:
        for preset in sweep.presets_of(name):
            with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
                cfg = compose("train", overrides=[f"experiment={preset}"], return_hydra_config=True)
            params = cfg.hydra.sweeper.params
            assert len(str(params.seed).split(",")) >= 5, preset
            lengths = {s.split("@")[1] for s in str(params.warmup_setting).split(",")}
            assert len(lengths) >= 4 and "0" in lengths, preset
            assert sweep.grid_size(preset, []) >= 5 * 4 * 2
            tasks.add(cfg.task.name)
    assert tasks == {"digits", "charlm"}


def test_core_use_counts_training_time_of_the_runs_finished_since_the_start(tmp_path):
    began = time.time()
    old = tmp_path / "old"
    write_summary(old, {"status": "completed", "steps_run": 100, "batch_size": 10, "samples_per_s": 100.0})
    os.utime(old / runs.SUMMARY_FILE, (began - 60, began - 60))  # finished before this sweep: not counted
    for i, steps in enumerate((120, 60)):
        write_summary(tmp_path / f"new{i}", {"status": "completed", "steps_run": steps, "batch_size": 32,
                                                  "samples_per_s": 320.0})
    line = sweep.core_use(tmp_path, began - 1, wall=36.0, cores=2)
    assert line == "training steps of 2 runs: 18 core-s of 36 s wall x 2 cores = 25% of the machine's core time"


@pytest.mark.parametrize("name", ["warmup_length", "max_stable_lr", "adam_untuned", "constant_vs_gradual",
                                  "warmup_ablation"])
def test_every_experiment_has_its_full_scale_twin(name):
    assert sweep.presets_of(f"{name}_full")
