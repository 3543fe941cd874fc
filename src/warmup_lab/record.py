"""The run's per-step and per-evaluation CSV files, and when to write what.

Rows are kept in memory and appended to disk at each checkpoint and at the end, so the hot loop does
no I/O. On resume, rows past the checkpoint's step (written by the killed process after it) are cut,
so every step appears exactly once.
"""

from __future__ import annotations

import csv
from collections import deque
from pathlib import Path
from typing import Any

from warmup_lab import runs

STEP_COLUMNS = ("step", "loss", "lr", "grad_norm", "spike")
SHARPNESS_FILE = "sharpness.csv"
FINAL_LOSS_WINDOW = 10  # final_train_loss = mean of the last 10 training losses (the tail kept in memory)


def eval_due(done: int, total: int, every: int) -> bool:
    return done == total or (every > 0 and done % every == 0)


def checkpoint_due(done: int, total: int, every: int) -> bool:
    return every > 0 and done % every == 0 and done < total


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    new = not path.exists() or path.stat().st_size == 0
    columns = list(rows[0].keys()) if new else next(csv.reader(path.open()))
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _truncate(path: Path, last_step: int) -> list[dict[str, str]]:
    """Keep rows with step <= last_step; returns the kept rows."""
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        kept = [row for row in reader if int(float(row["step"])) <= last_step]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(kept)
    return kept


class MetricsFile:
    """metrics.csv (step, loss, lr, grad_norm, spike), eval.csv and sharpness.csv of one run."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._steps: list[tuple[int, float, float, float, int]] = []
        self._evals: list[dict[str, Any]] = []
        self._sharp: list[dict[str, Any]] = []
        self._mirror: list[dict[str, Any]] = []
        self._tail: deque[float] = deque(maxlen=FINAL_LOSS_WINDOW)

    def add_step(self, step: int, loss: float, lr: float, grad_norm: float, spike: bool) -> None:
        self._steps.append((step, loss, lr, grad_norm, int(spike)))
        self._mirror.append({"step": step, "train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm,
                             "train/spike": int(spike)})
        self._tail.append(loss)

    def add_eval(self, row: dict[str, Any]) -> None:
        self._evals.append(row)
        self._mirror.append({"step": row["step"] - 1, **{f"eval/{k}": v for k, v in row.items() if k != "step"}})

    def add_eval_extra(self, row: dict[str, Any]) -> None:
        self._sharp.append(row)
        self._mirror.append({"step": row["step"] - 1, **{f"sharpness/{k}": v for k, v in row.items() if k != "step"}})

    def take_mirror(self) -> list[dict[str, Any]]:
        rows, self._mirror = self._mirror, []
        return rows

    def final_losses(self) -> list[float]:
        """The last FINAL_LOSS_WINDOW training losses (fewer in a shorter run), which final_train_loss averages."""
        return list(self._tail)

    def flush(self) -> None:
        _append(self.run_dir / runs.METRICS_FILE, [dict(zip(STEP_COLUMNS, r)) for r in self._steps])
        _append(self.run_dir / runs.EVAL_FILE, self._evals)
        _append(self.run_dir / SHARPNESS_FILE, self._sharp)
        self._steps, self._evals, self._sharp = [], [], []

    def truncate(self, next_step: int) -> None:
        """Resume at `next_step`: drop later rows on disk and reload the loss tail."""
        # Step rows are indexed by update (0..next_step-1); eval and sharpness rows by updates done.
        kept = _truncate(self.run_dir / runs.METRICS_FILE, next_step - 1)
        _truncate(self.run_dir / runs.EVAL_FILE, next_step)
        _truncate(self.run_dir / SHARPNESS_FILE, next_step)
        self._tail.clear()
        self._tail.extend(float(r["loss"]) for r in kept[-FINAL_LOSS_WINDOW:])
