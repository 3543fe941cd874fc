"""Parity: our schedules give the LR the libraries themselves set on a real optimizer, at every update.

Each library scheduler is driven the way its docs say (optimizer.step(), then scheduler.step()), and we
read the LR the optimizer holds for update t. Where our default deliberately differs (cosine past T,
timm's hand-off jump, HF's min_lr reference), the test pins the difference down as documented.
"""

from __future__ import annotations

import math

import pytest
import pytorch_warmup
import torch
import transformers
from timm.scheduler import CosineLRScheduler
from torch.optim import lr_scheduler as tl

from warmup_lab.schedules import LRController, build_schedule

LR = 1e-3
# (T, T_w) including T_w = 0, 1 and T
GRID = [(40, 0), (40, 1), (40, 9), (40, 40), (37, 5)]


def _opt(lr: float = LR, betas=(0.9, 0.999), groups=None) -> torch.optim.Optimizer:
    params = groups or [torch.nn.Parameter(torch.zeros(2))]
    return torch.optim.AdamW(params, lr=lr, betas=betas)


def drive(make, steps: int, opt: torch.optim.Optimizer | None = None, group: int = 0, update=None) -> list[float]:
    """LR the optimizer holds for updates 0..steps-1 under a stock scheduler built by make(opt)."""
    opt = opt or _opt()
    sched = make(opt)
    out = []
    for t in range(steps):
        out.append(opt.param_groups[group]["lr"])
        opt.step()
        if t == steps - 1:
            break  # no LR is needed after the last update (HF's polynomial divides by zero at T_w = T)
        if update is None:
            sched.step()
        else:
            update(sched, t)
    return out


def ours(cfg: dict, T: int, lr: float = LR, betas=None, steps: int | None = None) -> list[float]:
    s = build_schedule(cfg, total_steps=T, target_lr=lr, betas=betas)
    return [s(t) for t in range(steps or T)]


def close(a: list[float], b: list[float], rel: float = 1e-9, abs_: float = 1e-15) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        assert math.isclose(x, y, rel_tol=rel, abs_tol=abs_), f"step {t}: ours {x!r} vs library {y!r}"


# -- Hugging Face transformers -----------------------------------------------------------------
@pytest.mark.parametrize("T,W", GRID)
def test_hf_constant_linear_cosine(T, W):
    hf = transformers
    close(ours({"warmup": "linear", "warmup_steps": W, "decay": "constant"}, T),
          drive(lambda o: hf.get_constant_schedule_with_warmup(o, W), T))
    close(ours({"warmup": "linear", "warmup_steps": W, "decay": "linear"}, T),
          drive(lambda o: hf.get_linear_schedule_with_warmup(o, W, T), T))
    for cycles in (0.5, 1.0, 1.7):
        close(ours({"warmup": "linear", "warmup_steps": W, "decay": "cosine", "cycles": cycles}, T),
              drive(lambda o: hf.get_cosine_schedule_with_warmup(o, W, T, num_cycles=cycles), T))


@pytest.mark.parametrize("T,W", GRID)
def test_hf_hard_restarts_polynomial_inverse_sqrt(T, W):
    hf = transformers
    for cycles in (1, 3):
        close(ours({"warmup": "linear", "warmup_steps": W, "decay": "cosine_restarts", "cycles": cycles}, T),
              drive(lambda o: hf.get_cosine_with_hard_restarts_schedule_with_warmup(o, W, T, num_cycles=cycles), T))
    for power, end in ((1.0, 1e-7), (2.0, 1e-5)):
        close(ours({"warmup": "linear", "warmup_steps": W, "decay": "polynomial", "power": power, "end_lr": end}, T),
              drive(lambda o: hf.get_polynomial_decay_schedule_with_warmup(o, W, T, lr_end=end, power=power), T))
    for ts in (None, 7):
        close(ours({"warmup": "linear", "warmup_steps": W, "decay": "inverse_sqrt", "timescale": ts}, T),
              drive(lambda o: hf.get_inverse_sqrt_schedule(o, W, timescale=ts), T))


@pytest.mark.parametrize("T,W", GRID)
def test_hf_cosine_with_min_lr(T, W):
    close(ours({"warmup": "linear", "warmup_steps": W, "decay": "cosine", "min_lr": 1e-5}, T),
          drive(lambda o: transformers.get_cosine_with_min_lr_schedule_with_warmup(o, W, T, min_lr=1e-5), T))
    close(ours({"warmup": "linear", "warmup_steps": W, "decay": "cosine", "min_lr_ratio": 0.1, "cycles": 0.75}, T),
          drive(lambda o: transformers.get_cosine_with_min_lr_schedule_with_warmup(
              o, W, T, num_cycles=0.75, min_lr_rate=0.1), T))


@pytest.mark.parametrize("T,W", [(40, 0), (40, 1), (40, 9), (37, 5)])
@pytest.mark.parametrize("shape,hf_warm", [("linear", "linear"), ("cosine", "cosine")])
@pytest.mark.parametrize("kind", ["cosine", "linear", "1-sqrt"])
def test_hf_wsd(T, W, shape, hf_warm, kind):
    ratio = 0.2
    d = int(ratio * T)
    for min_ratio in (0.0, 0.1):
        # HF's WSD warms up from min_lr_ratio: init_lr = min_lr gives the same schedule
        cfg = {"warmup": shape, "warmup_steps": W, "decay": "wsd", "decay_ratio": ratio, "wsd_decay": kind,
               "min_lr_ratio": min_ratio, "init_lr_ratio": min_ratio}
        close(ours(cfg, T, steps=T + 3),
              drive(lambda o: transformers.get_wsd_schedule(o, W, d, num_training_steps=T, warmup_type=hf_warm,
                                                            decay_type=kind, min_lr_ratio=min_ratio), T + 3))


def test_cosine_past_T_differs_as_documented():
    """HF and torch climb back after T (schedule pitfall 5, docs/definitions.md); ours stays at the floor."""
    T, W = 40, 5
    hf = drive(lambda o: transformers.get_cosine_schedule_with_warmup(o, W, T), 2 * T)
    mine = ours({"warmup": "linear", "warmup_steps": W, "decay": "cosine"}, T, steps=2 * T)
    close(mine[:T + 1], hf[:T + 1])
    assert hf[T + 10] > 1e-5 and hf[-1] > 0.5 * LR
    assert all(x == 0.0 for x in mine[T:])
    torch_lrs = drive(lambda o: tl.CosineAnnealingLR(o, T_max=T, eta_min=1e-5), 2 * T)
    mine = ours({"warmup": "none", "decay": "cosine", "min_lr": 1e-5}, T, steps=2 * T)
    assert torch_lrs[-1] > 0.5 * LR and all(x == pytest.approx(1e-5, rel=1e-12) for x in mine[T:])


# -- PyTorch ------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [40, 37])
def test_torch_decays_without_warmup(T):
    close(ours({"warmup": "none", "decay": "cosine", "min_lr": 1e-5}, T),
          drive(lambda o: tl.CosineAnnealingLR(o, T_max=T, eta_min=1e-5), T))
    for t0, mult in ((10, 1), (5, 2)):
        close(ours({"warmup": "none", "decay": "cosine_restarts", "t0": t0, "t_mult": mult, "min_lr": 1e-5}, T),
              drive(lambda o: tl.CosineAnnealingWarmRestarts(o, T_0=t0, T_mult=mult, eta_min=1e-5), T))
    close(ours({"warmup": "none", "decay": "exponential", "decay_rate": 0.93}, T),
          drive(lambda o: tl.ExponentialLR(o, gamma=0.93), T))
    close(ours({"warmup": "none", "decay": "polynomial", "power": 2.0}, T),
          drive(lambda o: tl.PolynomialLR(o, total_iters=T, power=2.0), T))
    close(ours({"warmup": "none", "decay": "linear"}, T),
          drive(lambda o: tl.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=T), T))
    close(ours({"warmup": "none", "decay": "step", "milestones": [12], "gamma": 0.5}, T)[:24],
          drive(lambda o: tl.StepLR(o, step_size=12, gamma=0.5), 24))  # StepLR repeats; compare one period
    close(ours({"warmup": "none", "decay": "step", "milestones": [10, 25], "gamma": 0.3}, T),
          drive(lambda o: tl.MultiStepLR(o, milestones=[10, 25], gamma=0.3), T))


@pytest.mark.parametrize("T,W", [(40, 1), (40, 9), (37, 5)])
def test_torch_linearlr_sequentiallr(T, W):
    """LinearLR (start factor > 0, as torch requires) then a decay, via SequentialLR(milestones=[T_w])."""
    s0 = 0.1
    warm = {"warmup": "linear", "warmup_steps": W, "init_lr_ratio": s0}

    def seq(decay):
        return lambda o: tl.SequentialLR(o, [tl.LinearLR(o, start_factor=s0, total_iters=W), decay(o)],
                                         milestones=[W])
    close(ours({**warm, "decay": "cosine", "min_lr": 1e-5}, T),
          drive(seq(lambda o: tl.CosineAnnealingLR(o, T_max=T - W, eta_min=1e-5)), T), rel=1e-8)
    close(ours({**warm, "decay": "cosine_restarts", "t0": 6, "t_mult": 2}, T),
          drive(seq(lambda o: tl.CosineAnnealingWarmRestarts(o, T_0=6, T_mult=2)), T), rel=1e-8)
    close(ours({**warm, "decay": "step", "milestones": [W + 10, W + 20], "gamma": 0.5}, T),
          drive(seq(lambda o: tl.MultiStepLR(o, milestones=[10, 20], gamma=0.5)), T), rel=1e-8)
    close(ours({**warm, "decay": "exponential", "decay_rate": 0.9}, T),
          drive(seq(lambda o: tl.ExponentialLR(o, gamma=0.9)), T), rel=1e-8)


# -- pytorch-warmup -----------------------------------------------------------------------------
def _pw(warmup_cls, T: int, b2: float, decay: str | None) -> list[float]:
    opt = _opt(betas=(0.9, b2))
    lr_sched = tl.CosineAnnealingLR(opt, T_max=T) if decay == "cosine" else None
    warm = warmup_cls(opt)
    out = []
    for _ in range(T):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        with warm.dampening():
            if lr_sched is not None:
                lr_sched.step()
    return out


@pytest.mark.parametrize("shape,cls", [("untuned_linear", pytorch_warmup.UntunedLinearWarmup),
                                       ("untuned_exponential", pytorch_warmup.UntunedExponentialWarmup),
                                       ("radam", pytorch_warmup.RAdamWarmup)])
@pytest.mark.parametrize("decay", ["constant", "cosine"])
def test_pytorch_warmup(shape, cls, decay):
    T, b2 = 300, 0.99
    close(ours({"warmup": shape, "decay": decay}, T, betas=(0.9, b2)), _pw(cls, T, b2, decay))


def test_pytorch_warmup_rule_of_thumb_values():
    """schedule pitfall 8, docs/definitions.md: periods 1999 and 999 at beta2=0.999; RAdam 0.017, 0.221, 0.647 at t=0, 100, 1000."""
    b = (0.9, 0.999)
    lin = build_schedule({"warmup": "untuned_linear", "decay": "constant"}, 2100, 1.0, b)
    exp_ = build_schedule({"warmup": "untuned_exponential", "decay": "constant"}, 2100, 1.0, b)
    assert (lin.warmup_steps, exp_.warmup_steps) == (1999, 999)
    assert lin(1997) < 1.0 and lin(1998) == 1.0
    assert all(exp_(t) < 1.0 for t in (999, 2000, 2099))  # never exactly 1, as pytorch-warmup
    radam = build_schedule({"warmup": "radam", "decay": "constant"}, 1001, 1.0, b)
    assert [round(radam(t), 3) for t in (0, 100, 1000)] == [0.017, 0.221, 0.647]
    close(ours({"warmup": "radam", "decay": "constant"}, 1001, lr=LR, betas=b),
          _pw(pytorch_warmup.RAdamWarmup, 1001, 0.999, None))
    close(ours({"warmup": "untuned_linear", "decay": "cosine"}, 2100, lr=LR, betas=b),
          _pw(pytorch_warmup.UntunedLinearWarmup, 2100, 0.999, "cosine"))


# -- timm ---------------------------------------------------------------------------------------
def _timm(T: int, W: int, prefix: bool, init: float, lr_min: float) -> list[float]:
    t_initial = T - W if prefix else T
    return drive(lambda o: CosineLRScheduler(o, t_initial=t_initial, lr_min=lr_min, warmup_t=W,
                                             warmup_lr_init=init, warmup_prefix=prefix, t_in_epochs=False),
                 T, update=lambda s, t: s.step_update(num_updates=t + 1))


@pytest.mark.parametrize("T,W", [(40, 1), (40, 9), (37, 5)])
def test_timm_cosine_warmup_prefix(T, W):
    cfg = {"warmup": "linear", "warmup_steps": W, "decay": "cosine", "init_lr": 1e-5, "min_lr": 2e-5}
    close(ours(cfg, T), _timm(T, W, True, 1e-5, 2e-5))
    # warmup_prefix=False: the cosine runs over [0, T] and the warmup overlays it -> compose=overlay
    close(ours({**cfg, "compose": "overlay"}, T), _timm(T, W, False, 1e-5, 2e-5))


def test_timm_handoff_jump_vs_ours():
    """schedule pitfall 4, docs/definitions.md: timm warmup_prefix=False drops at the hand-off; our default is continuous."""
    T, W = 40, 20
    timm = _timm(T, W, False, 0.0, 0.0)
    mine = ours({"warmup": "linear", "warmup_steps": W, "decay": "cosine", "step0": "shifted"}, T)
    assert timm[W - 1] / LR > 0.9 and timm[W] / LR < 0.55  # 0.95 -> 0.5: a jump
    assert mine[W - 1] == mine[W] == LR


# -- seeds' closed forms ------------------------------------------------------------------------
def test_seed_001_exponential_and_shifted_cosine():
    T, W, eta_min = 200, 40, 1e-6
    mine = ours({"warmup": "exponential", "warmup_steps": W, "decay": "cosine"}, T)
    close(mine[:W], [LR * (1 - math.exp(-5 * t / W)) for t in range(W)])
    norm = ours({"warmup": "exponential", "warmup_steps": W, "decay": "cosine", "exp_normalize": True}, T)
    close(norm[:W], [LR * (1 - math.exp(-5 * t / W)) / (1 - math.exp(-5)) for t in range(W)])
    # seed 001's WarmupCosineAnnealingLR: base*(t+1)/W, then cosine over (t-W)/(T-W) to eta_min
    seed = [LR * (t + 1) / W if t < W else eta_min + (LR - eta_min) * (1 + math.cos(math.pi * (t - W) / (T - W))) / 2
            for t in range(T)]
    close(ours({"warmup": "linear", "warmup_steps": W, "step0": "shifted", "decay": "cosine", "min_lr": eta_min}, T),
          seed)


@pytest.mark.parametrize("d,W", [(512, 4000), (128, 20)])
def test_noam_formula_and_hf_inverse_sqrt(d, W):
    """schedule pitfall 9, docs/definitions.md: Noam = d^-0.5 min(t^-0.5, t W^-1.5) = HF inverse_sqrt with base (dW)^-0.5 from t=1 on."""
    T = 3 * W
    mine = ours({"warmup": "linear", "warmup_steps": W, "decay": "noam", "d_model": d}, T, lr=1.0)
    vaswani = [d ** -0.5 * min(t ** -0.5, t * W ** -1.5) for t in range(1, T)]
    close(mine[1:], vaswani, rel=1e-12)
    steps = range(0, T, max(1, T // 200))
    hf = drive(lambda o: transformers.get_inverse_sqrt_schedule(o, W), T, opt=_opt(lr=(d * W) ** -0.5))
    close([mine[t] for t in steps], [hf[t] for t in steps], rel=1e-12)


def test_hf_min_lr_reference_differs_with_group_lrs():
    """schedule pitfall 3, docs/definitions.md: HF turns min_lr into a ratio of optimizer.defaults['lr']; we use each group's base."""
    T, W = 30, 3
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    groups = [{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}]
    hf_end = [drive(lambda o: transformers.get_cosine_with_min_lr_schedule_with_warmup(o, W, T, min_lr=1e-5),
                    T + 1, opt=torch.optim.SGD(groups, lr=1e-2), group=g)[-1] for g in (0, 1)]
    assert hf_end == pytest.approx([1e-6, 1e-7], rel=1e-9)  # 1e-5 / 1e-2 of each group
    opt = torch.optim.SGD([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}], lr=1e-2)
    ctl = LRController(opt, build_schedule({"warmup": "linear", "warmup_steps": W, "min_lr": 1e-5}, T, 1e-3))
    ctl.apply(T)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5, 1e-6], rel=1e-12)
    assert ctl.group_floors() == pytest.approx([1e-5, 1e-6], rel=1e-12)
