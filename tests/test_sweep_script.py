"""warmup_lab.sweep (`make sweep`): the default study's shape, and the core-time line it ends with."""

from __future__ import annotations

import os
import time

import pytest
from omegaconf import OmegaConf

from warmup_lab import runs, sweep
from warmup_lab.summary import write_summary


def _sweep_params(preset: str):
    from hydra import compose, initialize_config_dir

    from warmup_lab.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    lrs = [float(x) for x in str(params["optimizer.lr"]).split(",")]
    seeds = [int(x) for x in str(params.seed).split(",")]
    settings = str(params.warmup_setting).split(",")
    return cfg, lrs, seeds, settings


def test_the_study_has_8_fresh_seeds_a_root2_grid_and_warmup_at_most_a_tenth_of_200_steps_at_target():
    tasks = set()
    for preset in sweep.presets_of("study"):
        cfg, lrs, seeds, settings = _sweep_params(preset)
        assert len(seeds) >= 8 and min(seeds) >= 10, preset  # seeds 0-4 placed the grid: not reused
        ratios = [b / a for a, b in zip(lrs, lrs[1:])]
        assert all(1.40 < r < 1.42 for r in ratios), (preset, ratios)  # 2^(1/2) to 3 significant digits
        lengths = [int(s.split("@")[1]) for s in settings]
        assert 0 in lengths and len(lengths) >= 3
        assert max(lengths) <= 0.1 * cfg.train.steps and cfg.train.steps - max(lengths) >= 200
        assert cfg.detect.divergence.patience >= cfg.train.steps - max(lengths)  # no finite run cut short
        assert len(cfg.comparisons) >= 2
        tasks.add(cfg.task.name)
    assert tasks == {"digits", "charlm"}


def test_pre_vs_post_ln_is_an_lr_sweep_per_placement_with_and_without_warmup_on_fresh_seeds():
    (preset,) = sweep.presets_of("pre_vs_post_ln")
    cfg, lrs, seeds, settings = _sweep_params(preset)
    assert len(seeds) >= 5 and not {90, 91} & set(seeds)  # seeds 90, 91 placed the grid
    assert all(1.40 < b / a < 1.42 for a, b in zip(lrs, lrs[1:])) and len(lrs) >= 12
    assert str(cfg.hydra.sweeper.params["model.norm_position"]).split(",") == ["pre", "post"]
    lengths = [int(s.split("@")[1]) for s in settings]
    assert lengths == [0, 20] and max(lengths) <= 0.1 * cfg.train.steps and cfg.train.steps - max(lengths) >= 200
    assert cfg.detect.divergence.patience >= cfg.train.steps - max(lengths)
    named = [{tuple(sorted(d.items())) for d in pair} for pair in OmegaConf.to_container(cfg.comparisons)]
    across = [p for p in named if len({dict(d)["norm"] for d in p}) == 2]
    assert len(named) == 4 and len(across) == 2  # warmup within each placement, and Post vs Pre at each warmup


def test_make_sweep_is_the_study_at_smoke_scale_same_protocol_a_subset_of_its_grid():
    study = {_sweep_params(p)[0].task.name: _sweep_params(p) for p in sweep.presets_of("study")}
    tasks = set()
    for name in sweep.DEFAULT:
        for preset in sweep.presets_of(name):
            cfg, lrs, seeds, settings = _sweep_params(preset)
            s_cfg, s_lrs, _, s_settings = study[cfg.task.name]
            assert set(lrs) <= set(s_lrs) and len(lrs) >= 8, preset
            assert settings == s_settings and len(seeds) >= 3
            for key in ("train.steps", "detect.divergence.patience", "optimizer", "model", "comparisons"):
                assert OmegaConf.select(cfg, key) == OmegaConf.select(s_cfg, key), (preset, key)
            assert sweep.grid_size(preset, []) == len(lrs) * len(seeds) * len(settings)
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
                                  "warmup_ablation", "pre_vs_post_ln"])
def test_every_experiment_has_its_full_scale_twin(name):
    assert sweep.presets_of(f"{name}_full")


def test_an_unknown_preset_is_one_line_naming_the_valid_ones_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        sweep.main(["nosuchpreset"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "EXPERIMENT='nosuchpreset' is invalid: a preset: default, " in err and "study" in err
    assert len(err.strip().splitlines()) == 1 and not any(tmp_path.iterdir())
