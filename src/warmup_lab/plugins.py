"""Your own task or model, by config: the plug-in entry points and the checks that guard them.

- A task: `task=custom task._target_=my_pkg.build_task`. The target is called as `build_task(cfg, device)`
  (the whole composed config, the run's torch.device) and returns a `warmup_lab.tasks.Task`.
- A model for the built-in data: `model=custom model._target_=my_pkg.MyNet`. The target is called with the
  data's sizes as keywords (IMAGE_SIZES or SEQUENCE_SIZES below) plus every other key of `cfg.model`
  (`+model.dim=64` adds one), under the run's seed, and returns an `nn.Module`.

A group (task or model) whose config has a `_target_` key holds the plug-in's own keys: config checks
must not refuse keys they do not know there (`is_plugin_group`). Everything a plug-in can get wrong is
checked before the first step and answered by one line naming the key, the value and the fix (ConfigError),
so a bad plug-in writes nothing. Docs: docs/your-model.md.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from typing import Any, Callable, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from warmup_lab.errors import USER_ERRORS, ConfigError, require
from warmup_lab.tasks.base import Task

TARGET = "_target_"
TASK_KEY = f"task.{TARGET}"
MODEL_KEY = f"model.{TARGET}"
MODEL_RESERVED = ("name", "family", TARGET)  # keys of a model plug-in's group not passed to its target
IMAGE_SIZES = ("in_channels", "image_size", "num_classes")  # image data: (C, (H, W), classes) -> logits [B, K]
SEQUENCE_SIZES = ("vocab_size", "seq_len")  # token data: LongTensor [B, L] -> logits [B, L, vocab_size]
# A model plug-in on the built-in data returns logits: their names, and the size (passed to it) of the last axis.
LOGITS = {"image": ("[batch, num_classes]", "num_classes"), "tokens": ("[batch, seq_len, vocab_size]", "vocab_size")}
PATH_HINT = "put its folder on sys.path (PYTHONPATH=/path/to/folder, or pip install your package)"


def is_plugin_group(node: Any) -> bool:
    """True for a task/model group that has a `_target_` key: its other keys are the plug-in's own."""
    return isinstance(node, (Mapping, DictConfig)) and TARGET in node


def has_target(node: Any) -> bool:
    return is_plugin_group(node) and node.get(TARGET) is not None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0].rstrip('.')}" if text else type(err).__name__  # a fix follows


def locate(key: str, path: Any) -> Callable[..., Any]:
    """The callable `path` ('package.module.attr') names; one ConfigError line for each way it can fail."""
    require(isinstance(path, str) and "." in path.strip(".") and " " not in path, key, path,
            "a dotted path 'module.attr', e.g. my_pkg.models.MyNet")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # like `python -m`: a module in the current directory is found
    parts = path.split(".")
    module, attrs = None, parts
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            module, attrs = importlib.import_module(name), parts[cut:]
            break
        except ModuleNotFoundError as err:
            if err.name is not None and not name.startswith(err.name):
                raise ConfigError(key, path, f"importing {name} failed ({_first_line(err)}): install what it "
                                  "imports") from None
        except Exception as err:  # noqa: BLE001 - the user's module raised while importing
            raise ConfigError(key, path, f"importing {name} raised {_first_line(err)}: fix that module") from None
    if module is None:
        raise ConfigError(key, path, f"module {parts[0]!r} not found: {PATH_HINT}")
    obj: Any = module
    for i, attr in enumerate(attrs):
        if not hasattr(obj, attr):
            where = ".".join(parts[:len(parts) - len(attrs) + i])
            raise ConfigError(key, path, f"{where} has no attribute {attr!r}: check the name")
        obj = getattr(obj, attr)
    require(callable(obj), key, path, f"is a {type(obj).__name__}, not callable: name a function or a class")
    return obj


def _call(key: str, path: str, fn: Callable[..., Any], *args: Any, fix: str = "", **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001 - a plug-in's own bug, reported as one line before anything runs
        shown = ", ".join([*map(_short, args), *(f"{k}={_short(v)}" for k, v in kwargs.items())])
        name = getattr(fn, "__name__", type(fn).__name__)  # a module: its class
        raise ConfigError(key, path, f"{name}({shown}) raised {_first_line(err)}{fix}") from None


def _short(x: Any) -> str:
    """An argument as one short token: shapes for tensors, class names for modules and configs."""
    if isinstance(x, torch.Tensor):
        return f"tensor{list(x.shape)}"
    if isinstance(x, (nn.Module, DictConfig)):
        return type(x).__name__
    if isinstance(x, tuple):
        return "(" + ", ".join(map(_short, x)) + ("," if len(x) == 1 else "") + ")"
    return repr(x)


# -- task plug-ins ------------------------------------------------------------------------------
def build_task_plugin(cfg: DictConfig, device: torch.device) -> Task:
    """`task._target_(cfg, device)`, checked: a Task whose parameters, batches and loss the trainer can use."""
    path = cfg.task.get(TARGET)
    require(path is not None, TASK_KEY, path, "task=custom needs task._target_=my_pkg.build_task")
    task = _call(TASK_KEY, path, locate(TASK_KEY, path), cfg, device)
    require(isinstance(task, Task), TASK_KEY, path,
            f"returned a {type(task).__name__}, not a warmup_lab.tasks.Task: return Task(name=..., model=..., ...)")
    check_task(task, TASK_KEY, path, device)
    return task


def check_task(task: Task, key: str, path: str, device: torch.device, logits: bool = False) -> None:
    """The Task contract, tried once before training; leaves the model, its buffers and every RNG as found.
    `logits`: a model plug-in on the built-in data, whose output shape is checked first."""
    shape_hint = f": the model must return logits {_logits_of(task.kind)[0]}" if logits else ""
    require(isinstance(task.model, nn.Module), key, path, f"Task.model is a {type(task.model).__name__}, "
            "not a torch.nn.Module")
    for field in ("batch", "loss", "evaluate"):
        require(callable(getattr(task, field)), key, path, f"Task.{field} is not callable")
    require(isinstance(task.batch_size, int) and task.batch_size >= 1, key, path,
            f"Task.batch_size={task.batch_size!r}: the number of samples per batch, an int >= 1")
    require(isinstance(task.kind, str), key, path, f"Task.kind={task.kind!r}: a string ('lm' for a language model)")
    _check_device(task.model, key, path, device)
    buffers = {name: b.detach().clone() for name, b in task.model.named_buffers()}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for step in (0, 1):
            first = _call(key, path, task.batch, step)
            require(_same(first, _call(key, path, task.batch, step)), key, path,
                    f"batch({step}) returned different data when called twice: batches must be a pure function "
                    "of the step (seed a torch.Generator with (seed, step) inside batch)")
        if logits:
            _check_logits(task, key, path, first[0], shape_hint)
        loss = _call(key, path, task.loss, task.model, first, fix=shape_hint)
    with torch.no_grad():
        for name, b in task.model.named_buffers():
            b.copy_(buffers[name])  # e.g. BatchNorm's running statistics: the check must not move them
    ok = isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_floating_point() and loss.requires_grad
    require(ok, key, path, f"loss(model, batch) returned {_describe(loss)}: it must return the mean loss as a "
            f"scalar tensor with grad{shape_hint}")
    require(math.isfinite(loss.item()), key, path, f"loss(model, batch(0)) = {loss.item()} at initialisation: "
            f"it must be finite{shape_hint}")


def _logits_of(kind: str) -> tuple[str, str]:
    return LOGITS["image" if kind == "image" else "tokens"]


def _check_logits(task: Task, key: str, path: str, x: torch.Tensor, shape_hint: str) -> None:
    """The first forward pass against the logits the built-in loss reads: the loss's own error
    (`Target 7 is out of bounds`) names neither the shape returned nor the one expected."""
    names, size = _logits_of(task.kind)
    expected = [*(x.shape[:1] if task.kind == "image" else x.shape), int(task.info[size])]
    with torch.no_grad():
        out = _call(key, path, task.model, x, fix=shape_hint)
    got = f"logits of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
    require(isinstance(out, torch.Tensor) and list(out.shape) == expected, key, path,
            f"returned {got}; expected {expected} ({names}): size its output by the {size}={expected[-1]} it is given")


def _check_device(model: nn.Module, key: str, path: str, device: torch.device) -> None:
    for name, p in model.named_parameters():
        where = p.device
        same = where.type == device.type and (device.index is None or where.index in (None, device.index))
        require(same, key, path, f"parameter {name} is on {where}, not on the run's device {device}: "
                "build the model on (or .to()) the `device` argument")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(torch.equal(a, b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        grad = "with grad" if x.requires_grad else "without grad"
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} {grad}"
    return f"a {type(x).__name__}"


# -- model plug-ins ----------------------------------------------------------------------------
def model_kwargs(model_cfg: DictConfig) -> dict[str, Any]:
    """The keys of a model plug-in's group passed to its target (all but MODEL_RESERVED)."""
    data = OmegaConf.to_container(model_cfg, resolve=True)
    return {k: v for k, v in data.items() if k not in MODEL_RESERVED}  # type: ignore[union-attr]


def build_model_plugin(model_cfg: DictConfig, seed: int | None, **sizes: Any) -> nn.Module:
    """`model._target_(**sizes, **other model keys)` under `seed` (the caller's RNG untouched; None: the
    caller seeded it)."""
    path = model_cfg.get(TARGET)
    require(path is not None, MODEL_KEY, path, "model=custom needs model._target_=my_pkg.MyNet")
    target = locate(MODEL_KEY, path)
    kwargs = model_kwargs(model_cfg)
    clash = sorted(set(kwargs) & set(sizes))
    require(not clash, f"model.{clash[0] if clash else ''}", kwargs.get(clash[0]) if clash else None,
            "set by the data: drop it from model")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = _call(MODEL_KEY, path, target, **sizes, **kwargs)
    require(isinstance(model, nn.Module), MODEL_KEY, path,
            f"returned a {type(model).__name__}, not a torch.nn.Module")
    return model


__all__ = ["TARGET", "MODEL_RESERVED", "IMAGE_SIZES", "SEQUENCE_SIZES", "is_plugin_group", "has_target", "locate",
           "build_task_plugin", "build_model_plugin", "check_task", "model_kwargs"]
