"""Optimizers built from conf/optimizer/*.yaml, their validation, and GI-Adam's definition."""

from __future__ import annotations

import io
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from warmup_lab.errors import ConfigError
from warmup_lab.optim import NAMES, GIAdam, build_optimizer, optimizer_info
from warmup_lab.paths import CONF_DIR

CONF = CONF_DIR / "optimizer"


def load(which: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{which}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def regression(seed: int = 0):
    """A small least-squares problem and a 2-layer net to fit it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, lambda: ((model(x) - y) ** 2).mean()


def test_yaml_files_cover_every_optimizer():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_optimizer_builds_from_yaml_and_trains(name):
    cfg = load(name)
    if name != "sgd":  # GI-Adam's bias correction is a built-in ~1000-step warmup: 1e-3 barely moves
        cfg.lr = 3e-2
    model, loss_fn = regression()
    opt = build_optimizer(cfg, model)
    assert optimizer_info(opt)["optimizer"] == name
    for group in opt.param_groups:
        assert group["lr"] == cfg.lr
    first = loss_fn().item()
    for _ in range(100):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    assert loss_fn().item() < 0.5 * first


@pytest.mark.parametrize(
    "name, overrides, field",
    [
        ("adam", {"name": "adamax"}, "optimizer.name"),
        ("adam", {"lr": 0.0}, "optimizer.lr"),
        ("sgd", {"lr": -0.1}, "optimizer.lr"),
        ("adam", {"lr": "fast"}, "optimizer.lr"),
        ("adam", {"betas": [0.9, 1.0]}, "optimizer.betas"),
        ("adamw", {"betas": [-0.1, 0.999]}, "optimizer.betas"),
        ("gi_adam", {"betas": [0.9]}, "optimizer.betas"),
        ("adam", {"betas": None}, "optimizer.betas"),
        ("adamw", {"weight_decay": -1e-4}, "optimizer.weight_decay"),
        ("sgd", {"weight_decay": -1.0}, "optimizer.weight_decay"),
        ("sgd", {"momentum": 0.0, "nesterov": True}, "optimizer.nesterov"),
        ("sgd", {"momentum": 1.5}, "optimizer.momentum"),
        ("adam", {"momentum": 0.9}, "optimizer.momentum"),
        ("sgd", {"betas": [0.9, 0.99]}, "optimizer.betas"),
        ("adam", {"bias_correction": False}, "optimizer.bias_correction"),
        ("gi_adam", {"bias_correction": "yes"}, "optimizer.bias_correction"),
        ("adam", {"eps": -1.0}, "optimizer.eps"),
        ("adam", {"decoupled": True}, "optimizer.decoupled"),
        ("adamw", {"decoupled": False}, "optimizer.decoupled"),
    ],
)
def test_bad_config_names_the_field(name, overrides, field):
    model, _ = regression()
    with pytest.raises(ConfigError) as err:
        build_optimizer(load(name, **overrides), model)
    assert err.value.field == field
    assert str(err.value).startswith(field)


def test_error_messages_say_what_is_expected():
    model, _ = regression()
    with pytest.raises(ConfigError, match="must be > 0"):
        build_optimizer(load("adam", lr=0), model)
    with pytest.raises(ConfigError, match="adam, adamw, gi_adam, radam, sgd"):
        build_optimizer(load("adam", name="lion"), model)


def test_optimizer_info_records_the_variant():
    model, _ = regression()
    info = optimizer_info(build_optimizer(load("gi_adam", bias_correction=False), model))
    assert info["optimizer"] == "gi_adam" and info["gi_bias_correction"] is False
    assert info["decoupled_weight_decay"] is True and info["betas"] == [0.9, 0.999]
    assert optimizer_info(build_optimizer(load("gi_adam"), model))["gi_bias_correction"] is True
    sgd = optimizer_info(build_optimizer(load("sgd", nesterov=True), model))
    assert sgd["gi_bias_correction"] is None and sgd["betas"] is None and sgd["nesterov"] is True
    assert optimizer_info(build_optimizer(load("adamw"), model))["decoupled_weight_decay"] is True
    assert optimizer_info(build_optimizer(load("radam", decoupled=True), model))["decoupled_weight_decay"] is True


def test_no_decay_bias_norm_splits_groups():
    model, _ = regression()
    opt = build_optimizer(load("adamw", no_decay_bias_norm=True), model)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and all(p.ndim == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert optimizer_info(opt)["no_decay_bias_norm"] is True
    assert len(build_optimizer(load("adamw"), model).param_groups) == 1


@pytest.mark.parametrize("bias_correction", [True, False])
def test_gi_adam_first_step_state_is_g0_squared(bias_correction):
    model, loss_fn = regression()
    opt = build_optimizer(load("gi_adam", bias_correction=bias_correction, lr=1e-2), model)
    loss_fn().backward()
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, p0, g in zip(model.parameters(), before, grads):
        state = opt.state[p]
        assert float(state["step"]) == 1.0
        torch.testing.assert_close(state["exp_avg_sq"], g * g, rtol=1e-6, atol=0)
        torch.testing.assert_close(state["exp_avg"], 0.1 * g)
        step = p.detach() - p0
        # m_hat = g_0; v_hat = g_0^2 / (1 - beta2) with bias correction, g_0^2 without.
        scale = math.sqrt(1 - 0.999) if bias_correction else 1.0
        expected = -1e-2 * g / (g.abs() / scale + 1e-8)
        torch.testing.assert_close(step, expected, rtol=1e-4, atol=1e-9)
        big = g.abs() > 1e-4  # away from eps, the update is lr * scale * sign(g)
        torch.testing.assert_close(step[big].abs(), torch.full_like(step[big], 1e-2 * scale), rtol=1e-3, atol=0)


@pytest.mark.parametrize("bias_correction, decoupled", [(True, True), (False, False)])
def test_gi_adam_matches_the_reference_recursion(bias_correction, decoupled):
    """Five updates against the definition written out in float64, with an LR that changes each step."""
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(7, generator=g, dtype=torch.float64) for _ in range(5)]
    p = nn.Parameter(torch.randn(7, generator=g, dtype=torch.float64))
    b1, b2, eps, wd = 0.8, 0.95, 1e-8, 0.1
    opt = GIAdam([p], lr=0.1, betas=(b1, b2), eps=eps, weight_decay=wd,
                 decoupled=decoupled, bias_correction=bias_correction)
    x, m, v = p.detach().clone(), torch.zeros(7, dtype=torch.float64), None
    for t, grad in enumerate(grads, start=1):
        lr = 0.05 * t
        opt.param_groups[0]["lr"] = lr
        p.grad = grad.clone()
        opt.step()
        gt = grad if decoupled else grad + wd * x
        if decoupled:
            x = x * (1 - lr * wd)
        v = gt**2 if v is None else b2 * v + (1 - b2) * gt**2
        m = b1 * m + (1 - b1) * gt
        v_hat = v / (1 - b2**t) if bias_correction else v
        x = x - lr * (m / (1 - b1**t)) / (v_hat.sqrt() + eps)
        torch.testing.assert_close(p.detach(), x, rtol=1e-12, atol=1e-12)


def test_gi_adam_differs_from_adam_only_in_v0():
    """With bias_correction false and v_0 = g_0^2, a constant gradient gives v = g^2 at every step."""
    p = nn.Parameter(torch.zeros(3))
    opt = GIAdam([p], lr=1e-3, bias_correction=False)
    for _ in range(4):
        p.grad = torch.tensor([1.0, -2.0, 0.5])
        opt.step()
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], torch.tensor([1.0, 4.0, 0.25]))


@pytest.mark.parametrize("bias_correction", [True, False])
def test_gi_adam_state_dict_resume_is_identical(bias_correction):
    cfg = load("gi_adam", bias_correction=bias_correction, lr=1e-2, weight_decay=0.05)

    def run(model, opt, loss_fn, steps):
        for t in steps:
            for group in opt.param_groups:
                group["lr"] = 1e-2 * min(1.0, (t + 1) / 8)  # what the LR controller does
            opt.zero_grad()
            loss_fn().backward()
            opt.step()

    model, loss_fn = regression()
    opt = build_optimizer(cfg, model)
    run(model, opt, loss_fn, range(0, 5))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    run(model, opt, loss_fn, range(5, 12))

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    resumed, loss_fn2 = regression(seed=0)
    resumed.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(cfg, resumed)
    opt2.load_state_dict(ckpt["opt"])
    run(resumed, opt2, loss_fn2, range(5, 12))

    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(opt.state[a]["exp_avg_sq"], opt2.state[b]["exp_avg_sq"])
        assert float(opt.state[a]["step"]) == float(opt2.state[b]["step"]) == 12.0
