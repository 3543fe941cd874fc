"""A run's checkpoint file: written atomically, read back, or set aside with the reason.

torch.save writes through a Python file object, so a full disk or a file-size limit is an OSError
naming ENOSPC/EFBIG (which job.py turns into one line), not torch's zip-writer error. A checkpoint
that cannot be read is renamed aside (never deleted) and the run starts over from step 0.
"""

from __future__ import annotations

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
    tmp = run_dir / (runs.CHECKPOINT_FILE + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
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
