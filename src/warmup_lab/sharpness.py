"""Sharpness: the top Hessian eigenvalue of the loss on a fixed batch (for Adam, preconditioned).

SGD at LR eta is unstable along a direction of curvature lambda once eta * lambda / 2 > 1
(Kalra & Barkeshli 2024: the loss catapults when sharpness exceeds 2/eta, and warmup lowers it).
For Adam the relevant operator is P^{-1/2} H P^{-1/2} with P = diag(sqrt(v_hat) + eps), the
preconditioner Adam divides by. The monitor must not change training: it never writes .grad or
parameters, draws its random start from its own generator, and restores the global RNG (dropout in
the loss closure would otherwise advance it).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import torch

from warmup_lab.optim import GIAdam


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def top_hessian_eigenvalue(
    loss_fn: Callable[[], torch.Tensor],
    params: Iterable[torch.Tensor],
    iters: int = 20,
    tol: float = 1e-4,
    preconditioner: Sequence[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    buffers: Iterable[torch.Tensor] | None = None,
) -> float:
    """Largest (algebraic) eigenvalue of H, or of P^{-1/2} H P^{-1/2} when `preconditioner` lists P.

    Power iteration with Hessian-vector products (double backward through one call of `loss_fn`).
    Power iteration finds the eigenvalue of largest magnitude; if that one is negative (early
    training can have strong negative curvature) a second run on M - lambda*I finds the top one.
    Stops when the Rayleigh quotient changes by less than tol (relative) or after `iters` HVPs per
    run. `preconditioner` is aligned with `params` (see adam_preconditioner); an entry of inf drops
    that parameter (P^{-1/2} = 0). `buffers` (e.g. model.buffers()) are restored afterwards, so
    BatchNorm running statistics updated by the forward pass do not move.
    """
    params = list(params)
    scale = None if preconditioner is None else [P.rsqrt() for P in preconditioner]
    if scale is not None and len(scale) != len(params):
        raise ValueError(f"preconditioner has {len(scale)} tensors for {len(params)} params")
    saved = [(b, b.detach().clone()) for b in (buffers or [])]
    gen = generator or torch.Generator(device=params[0].device).manual_seed(0)
    cuda = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            keep = [i for i, p in enumerate(params) if p.requires_grad]
            loss = loss_fn()
            grads = torch.autograd.grad(loss, [params[i] for i in keep], create_graph=True, allow_unused=True)
            keep = [i for i, g in zip(keep, grads) if g is not None and g.requires_grad]
            grads = [g for g in grads if g is not None and g.requires_grad]
            if not keep:
                return 0.0
            ps = [params[i] for i in keep]
            sc = None if scale is None else [scale[i].to(params[i].dtype) for i in keep]

            def matvec(v: list[torch.Tensor], shift: float) -> list[torch.Tensor]:
                u = v if sc is None else [x * s for x, s in zip(v, sc)]
                hu = torch.autograd.grad(grads, ps, grad_outputs=u, retain_graph=True,
                                         allow_unused=True, materialize_grads=True)
                out = [h.detach() for h in hu] if sc is None else [h.detach() * s for h, s in zip(hu, sc)]
                return [o - shift * x for o, x in zip(out, v)] if shift else out

            def power(shift: float) -> float:
                v = [torch.randn(p.shape, generator=gen, device=gen.device, dtype=p.dtype).to(p.device) for p in ps]
                norm = math.sqrt(_dot(v, v))
                v = [x / norm for x in v]
                lam = None
                for _ in range(max(1, iters)):
                    w = matvec(v, shift)
                    new = _dot(v, w)  # Rayleigh quotient, v is unit
                    norm = math.sqrt(_dot(w, w))
                    if norm == 0.0:
                        return new
                    v = [x / norm for x in w]
                    if lam is not None and abs(new - lam) <= tol * abs(new):
                        return new
                    lam = new
                return lam

            lam = power(0.0)
            if lam < 0:
                lam = lam + power(lam)
            return float(lam)
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


def adam_preconditioner(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor] | None:
    """Adam's diagonal P = sqrt(v_hat) + eps per parameter, as the optimizer divides by it.

    Reads exp_avg_sq and step: Adam/AdamW v_hat = v/(1-beta2^t); GI-Adam per its bias_correction;
    RAdam P = (sqrt(v)+eps)/(sqrt(1-beta2^t)*rect_t), and P = 1 while RAdam is still SGD-like.
    None for SGD, other optimizers, or before the first step. Aligned with `params` (default: the
    optimizer's own order, which differs from model.parameters() when groups were split); a
    parameter without state gets inf (Adam never moved it, so it drops out of the operator).
    """
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.RAdam, GIAdam)):
        return None
    if not any("exp_avg_sq" in s for s in optimizer.state.values()):
        return None
    group_of = {p: g for g in optimizer.param_groups for p in g["params"]}
    params = list(params) if params is not None else list(group_of)
    out = []
    for p in params:
        state, group = optimizer.state.get(p, {}), group_of.get(p)
        if "exp_avg_sq" not in state or group is None:
            out.append(torch.full_like(p, math.inf))
            continue
        t, (_, beta2), eps = float(state["step"]), group["betas"], group["eps"]
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        bc2 = 1 - beta2**t
        if isinstance(optimizer, GIAdam) and not group["bias_correction"]:
            bc2 = 1.0
        if not isinstance(optimizer, torch.optim.RAdam):
            out.append(v.sqrt() / math.sqrt(bc2) + eps)
            continue
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * beta2**t / bc2
        if rho_t <= 5:
            out.append(torch.ones_like(p))
        else:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            out.append((v.sqrt() + eps) / (math.sqrt(bc2) * rect))
    return out


def instability_ratio(lr: float, sharpness: float, threshold: float = 2.0) -> float:
    """lr * sharpness / threshold: plain gradient descent is unstable when this exceeds 1.

    threshold=2 is the GD/SGD edge (the logged `lr x sharpness / 2`); heavy-ball momentum beta
    moves the edge to 2(1+beta), and Adam's preconditioned one to (2+2*beta1)/(1-beta1) (38 at 0.9).
    """
    return lr * sharpness / threshold


def initial_sharpness(task, params: Sequence[torch.Tensor], iters: int) -> float:
    """lambda0: the top Hessian eigenvalue of the training loss on the batch of step 0, at initialisation.

    With `train.full_batch=true` that batch is the whole training set, so lambda0 is the sharpness of
    the full-batch loss (Lewkowycz et al. 2020; Kalra & Barkeshli 2024). No preconditioner: before the
    first update Adam has none, and the units below are meant for (S)GD.
    """
    return top_hessian_eigenvalue(lambda: task.loss(task.model, task.batch(0)), params, iters=iters, tol=1e-6,
                                  buffers=list(task.model.buffers()))  # tighter than the monitor: it sets units


def lr_from_sharpness_units(c: float, lambda0: float) -> float:
    """eta = c / lambda0: `optimizer.lr_in_sharpness_units=c` is the papers' c = eta * lambda0.

    c = 2 is GD's linear-stability edge at initialisation (eta = 2 / lambda0); the catapult phase is
    2 < c < c_max (c_max = 4 for Lewkowycz et al.'s two-layer model); Kalra & Barkeshli sweep c = 2^x.
    """
    from warmup_lab.errors import require

    require(math.isfinite(c) and c > 0, "optimizer.lr_in_sharpness_units", c, "a number > 0 (c = eta * lambda0)")
    require(math.isfinite(lambda0) and lambda0 > 0, "lambda0", lambda0,
            "the loss has no positive curvature at initialisation; set optimizer.lr instead")
    return c / lambda0


def resolve_lr_units(cfg, task) -> tuple[Any, dict[str, float]]:
    """Measure lambda0 when the run asks for it and resolve `optimizer.lr_in_sharpness_units`.

    Returns (cfg, info): with c set, a copy of cfg whose optimizer.lr is eta = c / lambda0 (so the
    schedule, the optimizer and the summary's target_lr all see eta) and info = {lambda0, c, eta};
    with only the sharpness monitor on, cfg unchanged and info = {lambda0}; otherwise (cfg, {}).
    lambda0 is a deterministic function of the config (seeded init, fixed power-iteration start),
    so a resumed run measures the same value.
    """
    import copy

    from omegaconf import OmegaConf, open_dict

    c = OmegaConf.select(cfg, "optimizer.lr_in_sharpness_units")
    if c is None and not OmegaConf.select(cfg, "sharpness.every", default=0):
        return cfg, {}
    params = [p for p in task.model.parameters() if p.requires_grad]
    lambda0 = initial_sharpness(task, params, int(OmegaConf.select(cfg, "sharpness.init_iters", default=100)))
    if c is None:
        return cfg, {"lambda0": lambda0}
    eta = lr_from_sharpness_units(float(c), lambda0)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.optimizer.lr = eta
    return cfg, {"lambda0": lambda0, "lr_in_sharpness_units": float(c), "eta": eta}
