"""The notebook API (warmup_lab.api): the same configs, runs and schedules as the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import transformers

import warmup_lab as wl
from conftest import FAST, make_cfg
from warmup_lab.api import HF_SCHEDULES, preset_names
from warmup_lab.errors import ConfigError
from warmup_lab.schedules import schedule_from_cfg

GRID = [(40, 0), (40, 9), (37, 5), (40, 40)]
HF_KWARGS = {"cosine": {"num_cycles": 1.7}, "cosine_with_restarts": {"num_cycles": 3},
             "polynomial": {"power": 2.0, "lr_end": 1e-5}, "inverse_sqrt": {"timescale": 7},
             "cosine_with_min_lr": {"min_lr_rate": 0.1}}


def _lrs(make, steps: int) -> list[float]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    sched, seen = make(opt), []
    for t in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        if t < steps - 1:  # HF's polynomial divides by zero past T_w = T
            sched.step()
    return seen


@pytest.mark.parametrize("name", sorted(HF_SCHEDULES))
@pytest.mark.parametrize("T,W", GRID)
def test_get_scheduler_gives_hugging_faces_lr_at_every_step(name, T, W):
    for extra in (None, HF_KWARGS.get(name)):
        if name == "cosine_with_min_lr" and extra is None:
            continue  # HF requires min_lr or min_lr_rate there
        ours = _lrs(lambda o: wl.get_scheduler(name, o, W, T, extra), T)
        theirs = _lrs(lambda o: transformers.get_scheduler(name, o, W, T, scheduler_specific_kwargs=extra), T)
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-18)


def test_get_scheduler_takes_our_presets_and_refuses_unknown_names():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, betas=(0.9, 0.99))
    lam = wl.get_scheduler("untuned_linear_cosine", opt, num_training_steps=500)
    expected = wl.schedule("untuned_linear_cosine", total_steps=500, peak_lr=1e-3, betas=(0.9, 0.99))
    assert [lam.lr_lambdas[0](t) * 1e-3 for t in range(500)] == pytest.approx([expected(t) for t in range(500)])
    assert expected.describe()["warmup_steps"] == 199  # the length came from the optimizer's beta2
    with pytest.raises(ConfigError, match="name='reduce_lr_on_plateau' is invalid: a Hugging Face name"):
        wl.get_scheduler("reduce_lr_on_plateau", opt, 10, 100)
    with pytest.raises(ConfigError, match="scheduler_specific_kwargs"):
        wl.get_scheduler("cosine", opt, 10, 100, {"cycles": 2})


@pytest.mark.parametrize("preset", preset_names())
def test_schedule_by_name_equals_the_preset_the_cli_composes(preset):
    cfg = make_cfg([f"schedule={preset}", "train.steps=300", "optimizer.lr=0.02"], "lr_curve")
    betas = cfg.optimizer.get("betas")
    ours = wl.schedule(preset, total_steps=300, peak_lr=0.02, betas=tuple(betas) if betas is not None else None)
    cli = schedule_from_cfg(cfg)
    assert [ours(t) for t in range(300)] == [cli(t) for t in range(300)]


def test_schedule_overrides_are_checked_like_the_cli():
    lr = wl.schedule("linear_cosine", total_steps=100, peak_lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    cli = schedule_from_cfg(make_cfg(["schedule=linear_cosine", "train.steps=100", "optimizer.lr=1.0",
                                      "schedule.warmup_steps=10", "schedule.min_lr_ratio=0.1"], "lr_curve"))
    assert [lr(t) for t in range(100)] == [cli(t) for t in range(100)] and lr.warmup_steps == 10
    with pytest.raises(ConfigError, match="schedule.decay_ratio"):
        wl.schedule("linear_cosine", total_steps=100, peak_lr=1.0, decay_ratio=0.2)
    with pytest.raises(ConfigError, match="name='wsdd' is invalid: one of .*wsd"):
        wl.schedule("wsdd", total_steps=100, peak_lr=1.0)


@pytest.mark.parametrize("peak_lr", [-1e-3, 0.0, float("inf")])
def test_a_bad_peak_lr_names_the_argument_in_the_command_lines_words(peak_lr):
    from warmup_lab.optim import validate

    with pytest.raises(ConfigError) as cli:
        validate(make_cfg([f"optimizer.lr={peak_lr}"]).optimizer)
    with pytest.raises(ConfigError) as api:
        wl.schedule("wsd", total_steps=100, peak_lr=peak_lr)
    assert str(api.value) == f"peak_lr={peak_lr!r} is invalid: {cli.value.expected}"
    assert cli.value.expected.startswith("must be > 0 and finite")
    with pytest.raises(ConfigError, match=r"^total_steps=0 is invalid"):
        wl.schedule("wsd", total_steps=0, peak_lr=1e-3)


def test_run_takes_a_list_or_a_dict_and_is_the_same_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["task=modadd", *FAST]
    first = wl.run(args)
    again = wl.run(dict(a.split("=", 1) for a in args))
    assert again["config_hash"] == first["config_hash"] and again["run_dir"] == first["run_dir"]
    curves = wl.load_curves(["runs"])
    assert list(curves["step"]) == list(range(6)) and set(curves["config_hash"]) == {first["config_hash"]}
    table = wl.load_runs(["runs"])
    assert len(table) == 1 and table.loc[0, "final_train_loss"] == first["final_train_loss"]


def test_a_bad_override_is_one_config_error_line():
    with pytest.raises(ConfigError, match="schedule='nope'"):
        wl.compose(["schedule=nope"])
    with pytest.raises(ConfigError, match=r"overrides=\['optimizer.lrr=1'\] is invalid: .*lrr") as err:
        wl.compose(["optimizer.lrr=1"])
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_import_warmup_lab_loads_no_torch_pandas_or_hydra():
    code = "import sys, warmup_lab; print(sorted(m for m in ('torch', 'pandas', 'hydra') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_warmup_lab_search_is_the_api_function_and_the_rule_has_its_own_module():
    import inspect

    from warmup_lab import api, lr_search, search

    assert search is wl.search is api.search and inspect.isfunction(search)
    assert inspect.isclass(lr_search.LRSearch) and not hasattr(lr_search, "__call__")
    with pytest.raises(ConfigError, match="overrides="):
        wl.search("task=digits", out_dir="x")
