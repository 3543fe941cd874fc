"""build_schedule: validate the `schedule` config group once, and return the Schedule it describes.

Every key is checked now (range, type, which warmup or decay reads it), so a bad value fails before a run
starts, with one line naming the key and the fix. `schedule_from_cfg` is the same for a composed
train or lr_curve config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from omegaconf import DictConfig, OmegaConf

from warmup_lab.errors import ConfigError, require
from warmup_lab.schedules.compose import Schedule
from warmup_lab.schedules.decays import DECAY_PARAMS, DECAYS, WSD_DECAYS
from warmup_lab.schedules.warmups import PYTORCH_WARMUP, WARMUP_PARAMS, WARMUPS

DEFAULT_WARMUP_RATIO = 0.1  # T_w = floor(0.1 T) when neither warmup_steps nor warmup_ratio is given

# Every key of the `schedule` group, with its default (conf/schedule/_defaults.yaml lists the same).
DEFAULTS: dict[str, Any] = {
    "name": None, "warmup": "linear", "warmup_steps": None, "warmup_ratio": None, "step0": None,
    "init_lr": 0.0, "init_lr_ratio": None, "decay": "cosine", "min_lr": 0.0, "min_lr_ratio": None,
    "compose": None, "cycles": None, "t0": None, "t_mult": 1, "power": 1.0, "end_lr": None,
    "milestones": None, "gamma": 0.1, "decay_rate": None, "exp_rate": 5.0, "exp_normalize": False,
    "warmup_power": 2.0, "hold_until_loss": None, "timescale": None, "d_model": None,
    "decay_ratio": 0.1, "wsd_decay": "cosine",
}
STEP0 = ("zero", "shifted")
COMPOSE = ("sequential", "multiply", "overlay")
NEVER_REACH_PEAK = ("untuned_exponential", "radam")  # multipliers that approach 1 only asymptotically
CYCLES_DEFAULT = {"cosine": 0.5, "cosine_restarts": 1.0, "wsd": 0.5}


def _f(key: str) -> str:
    return f"schedule.{key}"


def _number(key: str, value: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            integer: bool = False, field: str | None = None) -> Any:
    """A finite number (an int if `integer`) in the given range, else ConfigError naming the range."""
    field = field or _f(key)
    rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    require(ok, field, value, f"must be {kind} in {rng}")
    return int(value) if integer else float(value)


def check_lr(value: Any, field: str = "optimizer.lr") -> float:
    """The target/peak LR, checked by one rule in one wording wherever it is given (config key or API argument)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    require(ok, field, value, "must be > 0 and finite, a number (the target/peak LR)")
    return float(value)


def _as_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError("schedule", cfg, "must be a mapping (the `schedule` config group)")


def _warmup_length(c: dict[str, Any], warmup: str, total: int, beta2: float | None) -> tuple[int, str]:
    steps, ratio = c["warmup_steps"], c["warmup_ratio"]
    if warmup == "none":
        return 0, "none"
    if warmup in PYTORCH_WARMUP:
        require(steps is None and ratio is None, _f("warmup_steps" if steps is not None else "warmup_ratio"),
                steps if steps is not None else ratio,
                f"{warmup} takes its length from optimizer.betas[1] (pytorch-warmup's rule); set "
                "schedule.warmup_steps=null and schedule.warmup_ratio=null, or use warmup=linear/exponential")
        n = PYTORCH_WARMUP[warmup](beta2)
        rule = {"untuned_linear": "int(2/(1-beta2))", "untuned_exponential": "int(1/(1-beta2))",
                "radam": "nominal int(2/(1-beta2))"}[warmup]
        return n, rule
    if steps is not None and ratio is not None:
        raise ConfigError(_f("warmup_steps"), steps,
                          f"give warmup_steps or warmup_ratio, not both (warmup_ratio={ratio}); set the other to null")
    if steps is not None:
        return _number("warmup_steps", steps, lo=0, integer=True), "steps"
    if ratio is not None:
        r = _number("warmup_ratio", ratio, lo=0.0, hi=1.0)
        return int(math.floor(r * total)), f"ratio {r}"
    return int(math.floor(DEFAULT_WARMUP_RATIO * total)), f"default ratio {DEFAULT_WARMUP_RATIO}"


def _absolute_or_ratio(c: dict[str, Any], key: str, ref: float) -> float:
    """`key` (absolute, at the target's scale) or `key`_ratio (a fraction of the peak); not both."""
    value, ratio = c[key], c[f"{key}_ratio"]
    if ratio is not None:
        require(value in (None, 0, 0.0), _f(key), value,
                f"give {key} or {key}_ratio, not both ({key}_ratio={ratio}); set {key}=0")
        return _number(f"{key}_ratio", ratio, lo=0.0, hi=1.0) * ref
    return _number(key, 0.0 if value is None else value, lo=0.0)


# Keys every shape reads; the rest are read only by the warmup or decay that names them.
COMMON_KEYS = ("name", "warmup", "decay", "step0", "compose")
RAMP_KEYS = ("warmup_steps", "warmup_ratio", "init_lr", "init_lr_ratio")  # every warmup but `none`
FLOOR_KEYS = ("min_lr", "min_lr_ratio")  # every decay but `constant`
# With warmup=none, T_w = 0 may still be spelled out (sweeps pass `none@0`).
NONE_ALLOWS = {"warmup_steps": (None, 0), "warmup_ratio": (None, 0, 0.0)}


def keys_read(warmup: str, decay: str) -> tuple[str, ...]:
    """The schedule keys that warmup `warmup` and decay `decay` read."""
    keys = list(COMMON_KEYS)
    if warmup != "none":
        keys += RAMP_KEYS + WARMUP_PARAMS.get(warmup, ())
    if decay != "constant":
        keys += FLOOR_KEYS + DECAY_PARAMS.get(decay, ())
    return tuple(dict.fromkeys(keys))


def _refuse_unread(given: dict[str, Any], warmup: str, decay: str) -> None:
    """A key set away from its default that this warmup and decay do not read is an error, not a no-op.

    Presets start from conf/schedule/_defaults.yaml (every key at its default), so only what a preset
    or the command line changed can trip this.
    """
    reads = keys_read(warmup, decay)
    for key, value in given.items():
        if key in reads or value == DEFAULTS[key] or (warmup == "none" and value in NONE_ALLOWS.get(key, ())):
            continue
        owners = [f"warmup={w}" for w, keys in WARMUP_PARAMS.items() if key in keys]
        owners += [f"decay={d}" for d, keys in DECAY_PARAMS.items() if key in keys]
        only = f" (only {', '.join(owners)} reads it)" if owners else ""
        raise ConfigError(_f(key), value, f"not read by warmup={warmup} with decay={decay}{only}; they read "
                                          f"{', '.join(reads)}")


def _beta2(warmup: str, betas: Any) -> float | None:
    """Adam's beta2 when the warmup takes its length from it (pytorch-warmup's shapes), else None."""
    if warmup not in PYTORCH_WARMUP:
        return None
    require(betas is not None, "optimizer.betas", betas,
            f"warmup={warmup} sets its length from Adam's beta2; this optimizer has no betas (SGD?): "
            "use warmup=linear with warmup_steps, or an Adam-family optimizer")
    require(isinstance(betas, (list, tuple)) and len(betas) == 2, "optimizer.betas", betas,
            "must be a pair [beta1, beta2]")
    beta2 = _number("", betas[1], lo=0.0, hi=1.0, lo_open=True, field="optimizer.betas[1]")
    require(beta2 < 1.0, "optimizer.betas[1]", beta2, "must be < 1 for an untuned warmup")
    if warmup == "radam":
        require(beta2 > 0.6, "optimizer.betas[1]", beta2, "radam warmup needs beta2 > 0.6 (as pytorch-warmup)")
    return beta2


def _composition(c: dict[str, Any], warmup: str) -> tuple[str, str]:
    """(compose, step0): how warmup and decay combine, and the step-0 convention (auto from the shape)."""
    compose = c["compose"] if c["compose"] is not None else ("multiply" if warmup in PYTORCH_WARMUP else "sequential")
    require(compose in COMPOSE, _f("compose"), compose, f"must be null (auto) or one of {', '.join(COMPOSE)}")
    require(not (warmup in NEVER_REACH_PEAK and compose != "multiply"), _f("compose"), compose,
            f"{warmup} only approaches the peak asymptotically, so it must multiply the decay (compose=multiply)")
    step0 = c["step0"] if c["step0"] is not None else ("shifted" if warmup in PYTORCH_WARMUP else "zero")
    require(step0 in STEP0, _f("step0"), step0, "must be null (auto), zero (lr(0)=init_lr, HF) or shifted ((t+1)/T_w)")
    return compose, step0


def _warmup_steps(c: dict[str, Any], warmup: str, total: int, beta2: float | None, compose: str) -> tuple[int, str]:
    """T_w and the rule that set it, checked against T."""
    tw, rule = _warmup_length(c, warmup, total, beta2)
    if warmup in PYTORCH_WARMUP:
        require(tw <= total or compose == "multiply", "optimizer.betas[1]", beta2,
                f"{warmup}'s length {rule}={tw} exceeds train.steps={total} with compose={compose}")
    else:
        require(tw <= total, _f("warmup_steps"), tw, f"must be <= train.steps={total} (0 <= T_w <= T)")
    return tw, rule


def _milestones(c: dict[str, Any], total: int, start: int) -> list[int]:
    if c["milestones"] is None:
        return sorted({m for m in (total // 2, (3 * total) // 4) if m > start})
    ms = c["milestones"]
    require(isinstance(ms, (list, tuple)) and len(ms) > 0, _f("milestones"), ms,
            "must be a non-empty list of training steps")
    ms = [_number("milestones", m, lo=start + 1, hi=total, integer=True) for m in ms]
    require(ms == sorted(set(ms)), _f("milestones"), ms, "must be strictly increasing")
    return ms


def _shape_params(c: dict[str, Any], decay: str, total: int, tw: int, compose: str) -> dict[str, Any]:
    """The warmup and decay shape parameters, checked and with their automatic values filled in."""
    start = 0 if compose in ("multiply", "overlay") else tw  # where the decay's progress starts
    cyc = c["cycles"] if c["cycles"] is not None else CYCLES_DEFAULT.get(decay, 0.5)
    require(isinstance(c["exp_normalize"], bool), _f("exp_normalize"), c["exp_normalize"], "must be true or false")
    p: dict[str, Any] = {
        "cycles": _number("cycles", cyc, lo=0.0, lo_open=True),
        "t0": None if c["t0"] is None else _number("t0", c["t0"], lo=1, integer=True),
        "t_mult": _number("t_mult", c["t_mult"], lo=1, integer=True),
        "power": _number("power", c["power"], lo=0.0, lo_open=True),
        "gamma": _number("gamma", c["gamma"], lo=0.0, lo_open=True),
        "exp_rate": _number("exp_rate", c["exp_rate"], lo=0.0, lo_open=True),
        "exp_normalize": c["exp_normalize"],
        "warmup_power": _number("warmup_power", c["warmup_power"], lo=0.0, lo_open=True),
        "decay_rate": 0.01 ** (1.0 / max(1, total - start)) if c["decay_rate"] is None  # falls 100x over the decay
        else _number("decay_rate", c["decay_rate"], lo=0.0, hi=1.0, lo_open=True),
        "timescale": (start or 10_000) if c["timescale"] is None
        else _number("timescale", c["timescale"], lo=1, integer=True),
        "d_model": None if c["d_model"] is None else _number("d_model", c["d_model"], lo=1, integer=True),
        "decay_ratio": _number("decay_ratio", c["decay_ratio"], lo=0.0, hi=1.0),
        "noam_w": tw,
        "milestones": _milestones(c, total, start),
    }
    p["decay_steps"] = int(math.floor(p["decay_ratio"] * total))
    if decay == "wsd":
        require(p["decay_steps"] <= total - start, _f("decay_ratio"), c["decay_ratio"],
                f"decay phase floor(decay_ratio*T)={p['decay_steps']} overlaps the warmup (T={total}, T_w={start})")
    require(c["wsd_decay"] in WSD_DECAYS, _f("wsd_decay"), c["wsd_decay"], f"must be one of {', '.join(WSD_DECAYS)}")
    p["wsd_decay"] = c["wsd_decay"]
    return p


def _levels(c: dict[str, Any], warmup: str, decay: str, target: float, tw: int,
            p: dict[str, Any]) -> tuple[float, float, float]:
    """(peak, init, min) LRs; puts the polynomial's end_lr and the loss threshold into `p`."""
    peak = target  # optimizer.lr, except noam with d_model (optimizer.lr is then Noam's scale factor)
    if decay == "noam" and p["d_model"] is not None:
        peak = target * p["d_model"] ** -0.5 * max(tw, 1) ** -0.5
    init = _absolute_or_ratio(c, "init_lr", peak)
    require(init <= peak, _f("init_lr"), init, f"must be in [0, peak lr {peak:g}]")
    min_lr = _absolute_or_ratio(c, "min_lr", peak)
    require(min_lr <= peak, _f("min_lr"), min_lr, f"must be in [0, peak lr {peak:g}] (optimizer.lr={target:g})")
    p["end_lr"] = None if c["end_lr"] is None else _number("end_lr", c["end_lr"], lo=0.0, hi=peak)
    if warmup in ("geometric", "constant") and tw > 0:
        require(init > 0, _f("init_lr"), init,
                f"warmup={warmup} starts from init_lr, so it must be > 0 (e.g. schedule.init_lr_ratio=0.1)")
    hold = c["hold_until_loss"]
    if hold is not None:
        require(warmup == "constant", _f("hold_until_loss"), hold,
                f"only the constant warmup is released by a loss threshold (warmup={warmup})")
        hold = _number("hold_until_loss", hold, lo=0.0, lo_open=True)
    p["hold_until_loss"] = hold
    return peak, init, min_lr


def build_schedule(cfg_schedule: Any, total_steps: int, target_lr: float,
                   betas: tuple[float, float] | list[float] | None = None,
                   names: tuple[str, str] = ("train.steps", "optimizer.lr")) -> Schedule:
    """Validate the `schedule` group (all of it, now) and return the Schedule it describes.
    `names`: what the caller's user calls total_steps and target_lr (the config keys, or the API's arguments)."""
    given = _as_dict(cfg_schedule)
    unknown = sorted(set(given) - set(DEFAULTS))
    require(not unknown, _f(unknown[0]) if unknown else "schedule", given.get(unknown[0]) if unknown else None,
            f"unknown key; valid keys: {', '.join(DEFAULTS)}")
    c = {**DEFAULTS, **given}
    total = _number("", total_steps, lo=1, integer=True, field=names[0])
    target = check_lr(target_lr, names[1])
    warmup, decay = c["warmup"], c["decay"]
    require(warmup in WARMUPS, _f("warmup"), warmup, f"must be one of {', '.join(WARMUPS)}")
    require(decay in DECAYS, _f("decay"), decay, f"must be one of {', '.join(DECAYS)}")
    _refuse_unread(given, warmup, decay)
    beta2 = _beta2(warmup, betas)
    compose, step0 = _composition(c, warmup)
    tw, rule = _warmup_steps(c, warmup, total, beta2, compose)
    p = _shape_params(c, decay, total, tw, compose)
    peak, init, min_lr = _levels(c, warmup, decay, target, tw, p)
    name = c["name"]
    return Schedule(name=None if name is None else str(name), warmup=warmup, decay=decay, total_steps=total,
                    target_lr=target, peak_lr=peak, warmup_steps=tw, warmup_rule=rule, step0=step0,
                    compose=compose, init_lr=init, min_lr=min_lr, params=p, beta2=beta2)


def schedule_from_cfg(cfg: DictConfig) -> Schedule:
    """The Schedule a composed config (lr_curve or train) describes."""
    betas = cfg.optimizer.get("betas")
    return build_schedule(cfg.schedule, total_steps=int(cfg.train.steps), target_lr=float(cfg.optimizer.lr),
                          betas=tuple(betas) if betas is not None else None)
