"""Optimizers from `cfg.optimizer`: SGD, Adam, AdamW, RAdam (torch's) and GI-Adam (ours).

`lr` in the config is the target (peak) LR; the trainer's LR controller overwrites every param
group's `lr` before each update, so the value given at construction only matters as that target.
Bad config ends in a ConfigError naming `optimizer.<field>`, never a torch traceback mid-run.

`no_decay_bias_norm: true` puts every parameter with ndim <= 1 (biases, norm weights) in a second
param group with weight_decay 0 (tagged `no_decay: True`); the default is off, so weight decay
means what torch means by it unless a preset asks otherwise.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Iterable

import torch
from torch import nn

from warmup_lab.errors import ConfigError
from warmup_lab.schedules.build import check_lr

NAMES = ("adam", "adamw", "gi_adam", "radam", "sgd")
# Keys each optimizer reads. A key from another optimizer's set must be null (or the value the
# optimizer implies) here, so `optimizer=adam optimizer.momentum=0.9` fails instead of being ignored.
_KEYS = {
    "sgd": {"momentum", "nesterov", "weight_decay", "no_decay_bias_norm"},
    "adam": {"betas", "eps", "weight_decay", "no_decay_bias_norm"},
    "adamw": {"betas", "eps", "weight_decay", "no_decay_bias_norm"},
    "radam": {"betas", "eps", "weight_decay", "decoupled", "no_decay_bias_norm"},
    "gi_adam": {"betas", "eps", "weight_decay", "decoupled", "bias_correction", "no_decay_bias_norm"},
}
_ALL_KEYS = set().union(*_KEYS.values())
# What an optimizer does about a key it does not read; null or this value is accepted for that key.
_IMPLIED = {
    "sgd": {"decoupled": False},
    "adam": {"nesterov": False, "decoupled": False, "bias_correction": True},
    "adamw": {"nesterov": False, "decoupled": True, "bias_correction": True},
    "radam": {"nesterov": False, "bias_correction": True},
    "gi_adam": {"nesterov": False},
}


class GIAdam(torch.optim.Optimizer):
    """Adam whose second moment starts at the first gradient squared (Kalra & Barkeshli 2024).

    Adam's v_0 = 0 makes the first updates ~lr*sign(g) in every coordinate, which is what warmup
    guards against; GI-Adam sets v_0 = g_0^2 (g_0: the gradient of the first update, after L2 decay
    if `decoupled` is false), so after update 1 the state is exactly v = g_0^2.
    m starts at 0 as in Adam and is always divided by 1 - beta1^t (that bias is real).
    - bias_correction=True (their released code, which keeps optax's Adam bias correction):
      v_hat = v / (1 - beta2^t) overshoots while t << 1/(1-beta2) (v is already unbiased), so the
      first update is ~lr*sqrt(1-beta2)*sign(g_0) and grows like a ~1/(1-beta2)-step warmup.
    - bias_correction=False: v_hat = v, the first update is ~lr*sign(g_0).
    Weight decay is AdamW-style (p *= 1 - lr*wd) when `decoupled`, else L2 added to the gradient.
    State per parameter: step (float tensor), exp_avg, exp_avg_sq, as in torch.optim.Adam, so the
    usual state_dict/load_state_dict round trip resumes identically.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = True,
        bias_correction: bool = True,
    ):
        if not lr > 0:
            raise ValueError(f"invalid lr {lr}: must be > 0")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"invalid betas {betas}: two numbers in [0, 1)")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"invalid eps {eps} or weight_decay {weight_decay}: must be >= 0")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled=bool(decoupled), bias_correction=bool(bias_correction))
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, wd = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("GIAdam does not support sparse gradients")
                grad = p.grad
                if wd != 0:
                    if group["decoupled"]:
                        p.mul_(1 - lr * wd)
                    else:
                        grad = grad.add(p, alpha=wd)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = (grad * grad).clone(memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"].item()
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bc2 = (1 - beta2**t) if group["bias_correction"] else 1.0
                denom = (exp_avg_sq.sqrt() / math.sqrt(bc2)).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**t))
        return loss


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _number(cfg: Any, key: str, default: float, ok, expected: str) -> float:
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, Real) or not ok(float(value)):
        raise ConfigError(f"optimizer.{key}", value, expected)
    return float(value)


def _flag(cfg: Any, key: str, default: bool) -> bool:
    value = _get(cfg, key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"optimizer.{key}", value, "true or false")
    return value


def _betas(cfg: Any) -> tuple[float, float]:
    betas = _get(cfg, "betas", (0.9, 0.999))
    expected = "two numbers in [0, 1), e.g. [0.9, 0.999]"
    try:
        b1, b2 = (float(b) for b in betas if not isinstance(b, (bool, str)))
    except (TypeError, ValueError):
        raise ConfigError("optimizer.betas", betas, expected) from None
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ConfigError("optimizer.betas", list(betas), expected)
    return b1, b2


def _param_groups(model_or_params: Any, split: bool, weight_decay: float) -> list[Any]:
    params = model_or_params.parameters() if isinstance(model_or_params, nn.Module) else model_or_params
    params = list(params)
    if not split:
        return params
    if any(isinstance(p, dict) for p in params):
        raise ValueError("no_decay_bias_norm needs a module or a flat list of parameters, not param groups")
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "no_decay": True})
    return [g for g in groups if g["params"]]


# Read for every optimizer: the name, the target LR, and the LR in units of 1/lambda0 (sharpness.resolve_lr_units).
COMMON_KEYS = ("name", "lr", "lr_in_sharpness_units")


def validate(cfg_opt: Any) -> str:
    """Check `cfg.optimizer` without building anything; returns the optimizer's name."""
    name = _get(cfg_opt, "name")
    if name not in NAMES:
        raise ConfigError("optimizer.name", name, f"one of {', '.join(NAMES)}")
    if hasattr(cfg_opt, "keys"):  # a key nothing reads (`+optimizer.lrr=1`) would train at the default silently
        valid = [*COMMON_KEYS, *sorted(_KEYS[name])]
        for key in cfg_opt.keys():
            if key not in COMMON_KEYS and key not in _ALL_KEYS:
                raise ConfigError(f"optimizer.{key}", _get(cfg_opt, key),
                                  f"unknown key: {name} reads {', '.join(valid)}")
    check_lr(_get(cfg_opt, "lr", 0.0))
    for key in sorted(_ALL_KEYS - _KEYS[name]):
        value, implied = _get(cfg_opt, key), _IMPLIED[name].get(key)
        if value is not None and not (value is implied or value == implied):
            hint = " (Adam's momentum is betas[0])" if key in ("momentum", "nesterov") else ""
            fixed = "" if implied is None else f" ({name} behaves as {key}={implied})"
            raise ConfigError(f"optimizer.{key}", value, f"not settable for {name}{hint}{fixed}; leave it null")
    _number(cfg_opt, "weight_decay", 0.0, lambda v: v >= 0, "must be >= 0")
    _flag(cfg_opt, "no_decay_bias_norm", False)
    if name == "sgd":
        momentum = _number(cfg_opt, "momentum", 0.0, lambda v: 0 <= v < 1, "a number in [0, 1)")
        if _flag(cfg_opt, "nesterov", False) and momentum == 0:
            raise ConfigError("optimizer.nesterov", True, "needs optimizer.momentum > 0 (or set nesterov false)")
    else:
        _betas(cfg_opt)
        _number(cfg_opt, "eps", 1e-8, lambda v: v >= 0, "must be >= 0")
        if name in ("radam", "gi_adam"):
            _flag(cfg_opt, "decoupled", name == "gi_adam")
        if name == "gi_adam":
            _flag(cfg_opt, "bias_correction", True)
    return name


def build_optimizer(cfg_opt: Any, model_or_params: Any) -> torch.optim.Optimizer:
    """The optimizer `cfg_opt` describes, over a module's parameters or given params/groups."""
    name = validate(cfg_opt)
    lr = float(_get(cfg_opt, "lr"))
    wd = float(_get(cfg_opt, "weight_decay", 0.0))
    params = _param_groups(model_or_params, _get(cfg_opt, "no_decay_bias_norm", False), wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(_get(cfg_opt, "momentum", 0.0) or 0.0),
                               nesterov=bool(_get(cfg_opt, "nesterov", False)), weight_decay=wd)
    betas, eps = _betas(cfg_opt), float(_get(cfg_opt, "eps", 1e-8))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd,
                                 decoupled_weight_decay=bool(_get(cfg_opt, "decoupled", False)))
    return GIAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd,
                  decoupled=bool(_get(cfg_opt, "decoupled", True)),
                  bias_correction=bool(_get(cfg_opt, "bias_correction", True)))


def optimizer_name(optimizer: torch.optim.Optimizer) -> str | None:
    """Our name for a built optimizer (AdamW is checked before Adam: it subclasses it)."""
    for cls, name in ((GIAdam, "gi_adam"), (torch.optim.AdamW, "adamw"), (torch.optim.Adam, "adam"),
                      (torch.optim.RAdam, "radam"), (torch.optim.SGD, "sgd")):
        if isinstance(optimizer, cls):
            return name
    return None


def optimizer_info(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What ran, for the run summary: name, target LR, betas, eps, decay mode, GI-Adam variant."""
    name, d = optimizer_name(optimizer), optimizer.defaults
    decoupled = {"adamw": True, "adam": False, "radam": d.get("decoupled_weight_decay"),
                 "gi_adam": d.get("decoupled")}.get(name)
    return {
        "optimizer": name,
        "lr_target": float(d["lr"]),
        "betas": list(d["betas"]) if "betas" in d else None,
        "eps": d.get("eps"),
        "weight_decay": d.get("weight_decay"),
        "decoupled_weight_decay": decoupled,
        "no_decay_bias_norm": any(g.get("no_decay", False) for g in optimizer.param_groups),
        "momentum": d.get("momentum") if name == "sgd" else None,
        "nesterov": d.get("nesterov") if name == "sgd" else None,
        "gi_bias_correction": d.get("bias_correction") if name == "gi_adam" else None,
    }
