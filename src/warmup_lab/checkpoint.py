"""A run's checkpoint file: written atomically, read back, or set aside with the reason.

The state is serialised in memory and written by Python, so a full disk or a file-size limit is an
OSError naming ENOSPC/EFBIG (which job.py turns into one line), not torch's zip-writer error. A
checkpoint that cannot be read, or does not fit the model and optimizer built from the config (keys
or parameter names changed, as after a refactor), is renamed aside (never deleted), with the reason,
and the run starts over from step 0.
"""

from __future__ import annotations

import io
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmup_lab import runs


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: Path, state: dict[str, Any]) -> None:
    """Serialise in memory, then write: torch's zip writer would turn ENOSPC/EFBIG into its own RuntimeError."""
    buf = io.BytesIO()
    torch.save(state, buf)
    tmp = run_dir / (runs.CHECKPOINT_FILE + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, run_dir / runs.CHECKPOINT_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def set_aside(run_dir: Path, what: str, why: str) -> None:
    """Keep a checkpoint the run cannot use under another name, and say why; the run restarts from step 0."""
    path = run_dir / runs.CHECKPOINT_FILE
    kept = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.rename(kept)
    warnings.warn(f"{what} checkpoint {path} ({why}); kept as {kept.name}, restarting this run from step 0")


def load(run_dir: Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint's state, or None when there is none or it is unreadable (then it is set aside)."""
    path = run_dir / runs.CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: keep it, start over
        set_aside(run_dir, "unreadable", type(err).__name__)
        return None


STATE_KEYS = ("step", "model", "optimizer", "lr", "monitor", "rng", "evals", "sharpness", "elapsed")


def misfit(state: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why `state` cannot be loaded into `model` and `optimizer` (checked before anything is changed), else None."""
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        return f"not a checkpoint of this version: needs {', '.join(STATE_KEYS)}; has {have}"
    ours, theirs = model.state_dict(), state["model"]
    if not isinstance(theirs, dict) or set(ours) != set(theirs):
        extra, missing = sorted(set(theirs) - set(ours))[:3], sorted(set(ours) - set(theirs))[:3]
        return f"does not fit the model: parameters {missing} missing, {extra} not in the model"
    for name, tensor in ours.items():
        if getattr(theirs[name], "shape", None) != tensor.shape:
            return f"does not fit the model: {name} has shape {tuple(theirs[name].shape)}, the model {tuple(tensor.shape)}"
    groups = [len(g["params"]) for g in optimizer.state_dict()["param_groups"]]
    saved = [len(g.get("params", ())) for g in state["optimizer"].get("param_groups", ())]
    if groups != saved:
        return f"does not fit the optimizer: parameter groups of sizes {saved}, the optimizer has {groups}"
    return None
