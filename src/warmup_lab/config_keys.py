"""Every key a run's config may hold, declared once: a key nothing reads is refused, not silently ignored.

`+train.dtype=bfloat16` would otherwise run as the default under a new hash. The optimizer and
schedule groups refuse unread keys where they are built (optim.py, schedules/), so they are not
listed here. A task or model group with a `_target_` (a user's plug-in) holds the user's own keys:
those groups are not checked (nor is data, when the task is a plug-in). A null key is unset, so it is
allowed: a preset clears an inherited key that way. Flags must be real booleans:
`model.qk_layernorm=maybe` is refused, not read as true.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from warmup_lab.errors import ConfigError, require

TOP = ("seed", "device", "threads", "out", "runs_root", "experiment_name", "name", "warmup_setting",
       "comparisons", "selected_from", "compare_on",  # a preset's declarations, read by its report (stability.declared)
       "train", "optimizer", "schedule", "detect", "sharpness", "model", "data", "task", "logger")
GROUPS: dict[str, tuple[str, ...]] = {
    "train": ("steps", "batch_size", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoint",
              "progress", "grad_clip", "full_batch"),
    "detect": ("spike", "divergence", "catapult", "failed"),
    "detect.spike": ("ratio", "window", "floor", "abs_floor"),
    "detect.divergence": ("factor", "patience", "ceiling"),
    "detect.catapult": ("rise", "recover"),
    "detect.failed": ("loss_margin", "heldout"),
    "sharpness": ("every", "iters", "init_iters"),
    "task": ("name", "kind", "loss"),
    "logger": ("name", "project", "entity", "group", "job_type", "mode", "dir", "tags", "init_timeout",
               "system_metrics", "machine_metadata"),
}
# model and data keys by model.family / data.name (the files in conf/model/ and conf/data/)
MODEL_KEYS = {
    "transformer": ("d_model", "n_heads", "n_layers", "d_ff", "max_len", "norm_position", "qk_layernorm", "init"),
    "resnet": ("depth", "width", "norm", "shortcut"),
    "mlp": ("width", "depth", "activation", "bias"),
}
_IMAGE = ("augment", "pad", "flip", "eval_batch_size", "subset", "normalise", "label_noise")
_SEQUENCE = ("length", "vocab", "n_test", "seed", "eval_batch_size")
DATA_KEYS = {
    "cifar10": (*_IMAGE, "root", "download"),
    "digits": (*_IMAGE, "size", "n_test"),
    "shapes": (*_IMAGE, "size", "n_train", "n_test", "seed"),
    "copy": _SEQUENCE,
    "reverse": _SEQUENCE,
    "modadd": ("p", "train_frac", "seed", "eval_batch_size"),
    "charlm": ("path", "corpus", "max_chars", "block_size", "eval_batch_size"),
}
FLAGS = ("train.progress", "train.keep_checkpoint", "train.full_batch", "model.qk_layernorm", "model.bias",
         "data.augment", "data.flip", "data.download", "logger.system_metrics", "logger.machine_metadata")
CHOICES = {"logger.mode": ("auto", "online", "offline", "disabled")}


def _plugin(node: Any) -> bool:
    return isinstance(node, DictConfig) and "_target_" in node


def _refuse_unknown(cfg: DictConfig, group: str, known: tuple[str, ...]) -> None:
    node = cfg if not group else OmegaConf.select(cfg, group)
    if not isinstance(node, DictConfig):
        return
    for key in node.keys():
        where = f"{group}.{key}" if group else str(key)
        value = OmegaConf.select(cfg, where)
        require(key in known or key == "name" and group in ("model", "data") or value is None, where, value,
                f"unknown key: nothing reads it, so it would change nothing; known {group or 'top-level'} keys: "
                f"{', '.join(known)}")


def check_keys(cfg: DictConfig) -> None:
    """Raise ConfigError for a key nothing reads, a flag that is not true/false, or an unknown choice."""
    _refuse_unknown(cfg, "", TOP)
    for group, known in GROUPS.items():
        if not (group == "task" and _plugin(cfg.get("task"))):
            _refuse_unknown(cfg, group, known)
    if not _plugin(cfg.get("model")):
        family = OmegaConf.select(cfg, "model.family")
        require(family in MODEL_KEYS, "model.family", family, f"one of {', '.join(MODEL_KEYS)}")
        _refuse_unknown(cfg, "model", ("family", *MODEL_KEYS[family]))
    name = OmegaConf.select(cfg, "data.name")
    if not _plugin(cfg.get("task")) and name in DATA_KEYS:
        _refuse_unknown(cfg, "data", DATA_KEYS[name])
    for key in FLAGS:
        value = OmegaConf.select(cfg, key, default=None)
        if not (key.startswith("model.") and _plugin(cfg.get("model"))):
            require(value is None or isinstance(value, bool), key, value, "must be true or false")
    for key, options in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in options:
            raise ConfigError(key, value, f"one of {', '.join(options)}")
    kind = OmegaConf.select(cfg, "task.kind")
    require(not (OmegaConf.select(cfg, "train.full_batch") and kind in ("sequence", "lm")), "train.full_batch", True,
            f"full-batch GD needs a fixed training set (image tasks with data.subset); a {kind} task draws fresh "
            "batches every step: drop train.full_batch")
