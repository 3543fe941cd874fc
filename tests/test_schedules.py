"""Schedules: definitions and pitfalls (docs/definitions.md), validation at config time, LRController."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_cfg
from warmup_lab.errors import ConfigError
from warmup_lab.paths import CONF_DIR
from warmup_lab.schedules import DECAYS, WARMUPS, LRController, as_torch_scheduler, build_schedule

LR, T, BETAS = 1e-3, 100, (0.9, 0.99)
PRESETS = sorted(p.stem for p in (CONF_DIR / "schedule").glob("*.yaml") if not p.stem.startswith("_"))


def sched(T_=T, lr=LR, betas=BETAS, **cfg):
    return build_schedule(cfg, total_steps=T_, target_lr=lr, betas=betas)


def _extra(warmup: str) -> dict:
    return {"init_lr_ratio": 0.05} if warmup in ("geometric", "constant") else {}


@pytest.mark.parametrize("warmup", WARMUPS)
@pytest.mark.parametrize("decay", DECAYS)
def test_every_warmup_composes_with_every_decay(warmup, decay):
    """All x all: finite, within [0, peak], and t >= T holds the final value."""
    s = sched(warmup=warmup, decay=decay, **_extra(warmup))
    lrs = s.curve(T + 20)
    assert all(math.isfinite(x) and 0.0 <= x <= s.peak_lr * (1 + 1e-12) for x in lrs)
    assert all(x == lrs[T] for x in lrs[T:]) and lrs[T] == s.final_lr
    json.dumps(s.describe())


@pytest.mark.parametrize("warmup", ["linear", "cosine", "polynomial", "geometric"])
@pytest.mark.parametrize("decay", ["cosine", "linear", "polynomial", "exponential", "inverse_sqrt", "noam", "wsd",
                                   "cosine_restarts", "step", "constant"])
def test_handoff_is_continuous(warmup, decay):
    """schedule pitfall 4, docs/definitions.md: warmup ends exactly at the peak where the decay starts (step0 shifted reaches u=1)."""
    s = sched(warmup=warmup, warmup_steps=20, step0="shifted", decay=decay, **_extra(warmup))
    assert s(19) == pytest.approx(LR, rel=1e-12) and s(20) == pytest.approx(LR, rel=1e-12)
    z = sched(warmup=warmup, warmup_steps=20, step0="zero", decay=decay, **_extra(warmup))
    assert z(20) == pytest.approx(LR, rel=1e-12) and z(19) == pytest.approx(s(18), rel=1e-12)


def test_step0_conventions():
    zero = sched(warmup="linear", warmup_steps=10, step0="zero")
    shifted = sched(warmup="linear", warmup_steps=10, step0="shifted")
    assert zero(0) == 0.0 and zero(5) == pytest.approx(LR / 2)
    assert shifted(0) == pytest.approx(LR / 10) and shifted(9) == LR
    # pytorch-warmup's own indexing is `shifted`; zero is it delayed by one update
    a = sched(warmup="untuned_linear", decay="constant", step0="shifted")
    b = sched(warmup="untuned_linear", decay="constant", step0="zero")
    assert b(0) == 0.0 and all(b(t + 1) == a(t) for t in range(50))


def test_shape_formulas():
    k = sched(warmup="polynomial", warmup_steps=10, warmup_power=3.0, init_lr=1e-4, decay="constant")
    assert k(4) == pytest.approx(1e-4 + (LR - 1e-4) * 0.4 ** 3)
    g = sched(warmup="geometric", warmup_steps=10, init_lr=1e-5, decay="constant")
    assert g(0) == pytest.approx(1e-5) and g(5) == pytest.approx(1e-4)
    c = sched(warmup="cosine", warmup_steps=10, decay="constant")
    assert c(5) == pytest.approx(LR / 2)
    e = sched(warmup="exponential", warmup_steps=10, decay="constant")
    assert e(9) == pytest.approx(LR * (1 - math.exp(-4.5))) and e(10) == LR


def test_warmup_length_rules():
    assert sched(warmup_ratio=0.15, T_=99).warmup_steps == 14  # floor(r*T)
    assert sched().warmup_steps == 10 and sched().describe()["warmup_rule"] == "default ratio 0.1"
    assert sched(warmup="none", warmup_steps=0).warmup_steps == 0  # a sweep's `none@0`
    with pytest.raises(ConfigError, match=r"schedule.warmup_steps=30 .*not read by warmup=none"):
        sched(warmup="none", warmup_steps=30)  # refused, not silently ignored (tests/test_faults.py)
    assert sched(warmup="untuned_exponential", betas=(0.9, 0.999)).warmup_steps == 999
    assert sched(warmup_steps=T).warmup_steps == T  # T_w = T is allowed


def test_noam_and_optimizer_lr():
    """d_model null: optimizer.lr is the peak; d_model set: optimizer.lr is Noam's scale factor."""
    plain = sched(warmup="linear", warmup_steps=20, decay="noam")
    assert plain.peak_lr == LR and plain(20) == LR and plain(80) == pytest.approx(LR * 0.5)
    scaled = sched(warmup="linear", warmup_steps=20, decay="noam", d_model=64, lr=2.0)
    assert scaled.peak_lr == pytest.approx(2.0 * (64 * 20) ** -0.5)
    assert scaled.describe()["peak_lr"] == scaled.peak_lr and scaled.target_lr == 2.0


def test_loss_threshold_constant_warmup_pure_and_released():
    s = sched(warmup="constant", warmup_steps=40, init_lr_ratio=0.1, decay="constant", hold_until_loss=2.0)
    assert s(39) == pytest.approx(1e-4) and s(40) == LR  # sched(t) alone: held for the full T_w
    assert s.at(10, release_step=8) == LR and s.at(7, release_step=8) == pytest.approx(1e-4)
    assert s.at(39, release_step=99) == pytest.approx(1e-4)  # capped at T_w


# -- validation: one ConfigError naming field, value and the valid range -------------------------
BAD = [
    (dict(warmup="lin"), "schedule.warmup", "linear, exponential"),
    (dict(decay="cos"), "schedule.decay", "cosine_restarts"),
    (dict(warmup_steps=101), "schedule.warmup_steps", "<= train.steps=100"),
    (dict(warmup_steps=-1), "schedule.warmup_steps", "[0"),
    (dict(warmup_ratio=1.5), "schedule.warmup_ratio", "[0.0, 1.0]"),
    (dict(warmup_steps=5, warmup_ratio=0.1), "schedule.warmup_steps", "not both"),
    (dict(min_lr=2e-3), "schedule.min_lr", "peak"),
    (dict(init_lr=2e-3), "schedule.init_lr", "peak"),
    (dict(warmup="geometric"), "schedule.init_lr", "> 0"),
    (dict(warmup="constant"), "schedule.init_lr", "> 0"),
    (dict(warmup="untuned_linear", betas=None), "optimizer.betas", "SGD"),
    (dict(warmup="radam", betas=None), "optimizer.betas", "beta2"),
    (dict(warmup="radam", betas=(0.9, 0.5)), "optimizer.betas[1]", "0.6"),
    (dict(warmup="untuned_linear", warmup_steps=10), "schedule.warmup_steps", "optimizer.betas[1]"),
    (dict(warmup="radam", compose="sequential"), "schedule.compose", "multiply"),
    (dict(lr=0.0), "optimizer.lr", "> 0 and finite"),
    (dict(lr=-1e-3), "optimizer.lr", "> 0 and finite"),
    (dict(T_=0), "train.steps", "[1"),
    (dict(warmup_step=10), "schedule.warmup_step", "valid keys"),
    (dict(decay="step", milestones=[50, 40]), "schedule.milestones", "increasing"),
    (dict(decay="step", milestones=[5], warmup_steps=10), "schedule.milestones", "[11"),
    (dict(hold_until_loss=2.0), "schedule.hold_until_loss", "constant"),
    (dict(decay="wsd", decay_ratio=0.95, warmup_steps=10), "schedule.decay_ratio", "overlaps"),
    (dict(step0="one"), "schedule.step0", "shifted"),
    (dict(min_lr=1e-5, min_lr_ratio=0.1), "schedule.min_lr", "not both"),
]


@pytest.mark.parametrize("cfg,field,expected", BAD)
def test_bad_input_fails_at_config_time(cfg, field, expected):
    with pytest.raises(ConfigError) as err:
        sched(**cfg)
    assert err.value.field == field and expected in str(err.value) and "\n" not in str(err.value)


# -- presets -------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_compose_and_build(preset):
    cfg = make_cfg([f"schedule={preset}", "train.steps=200"], config_name="lr_curve")
    s = build_schedule(cfg.schedule, 200, float(cfg.optimizer.lr), tuple(cfg.optimizer.betas))
    assert s.name == preset and s.step0 in ("zero", "shifted")
    text = (CONF_DIR / "schedule" / f"{preset}.yaml").read_text()
    assert text.startswith("# ") and "step0:" in text
    # tiny runs (the trainer's smoke tests use T=6) still build with the preset's defaults
    if s.warmup not in ("untuned_linear", "untuned_exponential", "radam"):
        build_schedule(cfg.schedule, 6, 1e-3, None)


def test_required_presets_exist():
    need = {"linear_cosine", "none_constant", "constant_constant", "linear_constant", "linear_linear",
            "exponential_cosine", "cosine_cosine", "polynomial_cosine", "untuned_linear_cosine",
            "untuned_exponential_cosine", "radam_cosine", "noam", "wsd", "cosine_restarts", "linear_polynomial",
            "linear_step", "linear_inverse_sqrt"}
    assert need <= set(PRESETS)


# -- LRController -------------------------------------------------------------------------------
def _groups(*lrs):
    return [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]


def test_controller_scales_each_group_from_its_own_base():
    """schedule pitfall 3, docs/definitions.md: a group at 1e-4 with min_lr_ratio 0.1 ends at its own floor 1e-5."""
    s = sched(warmup="linear", warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    opt = torch.optim.AdamW(_groups(1e-3, 1e-4), lr=1e-3)
    ctl = LRController(opt, s)
    for t in range(T + 1):
        v = ctl.apply(t)
        assert v == s(t)
        assert opt.param_groups[1]["lr"] == pytest.approx(opt.param_groups[0]["lr"] / 10, rel=1e-12)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-5], rel=1e-12)
    assert ctl.group_floors() == pytest.approx([1e-4, 1e-5], rel=1e-12)
    assert [g["initial_lr"] for g in opt.param_groups] == [1e-3, 1e-4]


def test_controller_uses_existing_initial_lr():
    opt = torch.optim.SGD(_groups(5e-4), lr=1e-3)
    opt.param_groups[0]["initial_lr"] = 1e-3  # e.g. left by an earlier scheduler; lr has been lowered since
    ctl = LRController(opt, sched(warmup="none", decay="constant"))
    ctl.apply(0)
    assert opt.param_groups[0]["lr"] == 1e-3


def _losses(n):
    return [3.0 - 0.1 * t for t in range(n)]  # falls below 2.0 at step 11


def test_resume_gives_identical_lrs_including_loss_release():
    """schedule pitfall 2, docs/definitions.md: stop at k, rebuild from the state dict, and every later LR matches."""
    cfg = dict(warmup="constant", warmup_steps=40, init_lr_ratio=0.1, decay="cosine", hold_until_loss=2.0)
    losses = _losses(T)

    def run(start, state):
        opt = torch.optim.SGD(_groups(LR), lr=LR)
        ctl = LRController(opt, sched(**cfg))
        if state is not None:
            ctl.load_state_dict(state)
        out = []
        for t in range(start, T):
            out.append(ctl.apply(t))
            ctl.observe(t, losses[t])
        return out, ctl

    whole, ctl = run(0, None)
    assert ctl.release_step == 12 and whole[11] == pytest.approx(1e-4) and whole[12] == LR
    assert ctl.describe()["release_step"] == 12
    for k in (5, 20):
        c = LRController(torch.optim.SGD(_groups(LR), lr=LR), sched(**cfg))
        for t in range(k):
            c.apply(t)
            c.observe(t, losses[t])
        resumed, _ = run(k, c.state_dict())
        assert resumed == whole[k:]
    fresh, _ = run(20, None)  # without the state the release is lost: the state is what makes resume exact
    assert fresh != whole[20:]


def test_observe_is_noop_without_threshold_and_torch_adapter_matches():
    s = sched(warmup="linear", warmup_steps=10, decay="cosine", min_lr=1e-5)
    opt = torch.optim.SGD(_groups(LR, 2e-4), lr=LR)
    ctl = LRController(opt, s)
    ctl.observe(0, 0.0)
    assert ctl.state_dict()["release_step"] is None
    opt2 = torch.optim.SGD(_groups(LR, 2e-4), lr=LR)
    stock = as_torch_scheduler(opt2, s)
    for t in range(T):
        ctl.apply(t)
        assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups], rel=1e-12)
        opt2.step()
        stock.step()
