"""The run's per-step and per-evaluation CSV files, and when to write what.

Rows are kept in memory and appended to disk at each checkpoint and at the end, so the hot loop does
no I/O. On resume, rows past the checkpoint's step (written by the killed process after it) are cut,
so every step appears exactly once.
"""

from __future__ import annotations

import csv
import errno
import io
import os
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


def _csv(rows: list[dict[str, Any]], columns: list[str], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append `rows` in one write; a write cut short (disk full, file-size limit) is undone, so rows stay whole."""
    if not rows:
        return
    columns, _ = _read(path)
    data = _csv(rows, columns or list(rows[0].keys()), header=not columns).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
        except OSError as err:
            _undo(fd, size)
            raise OSError(err.errno, err.strerror, str(path)) from None
        if written != len(data):
            _undo(fd, size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    finally:
        os.close(fd)


def _undo(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:  # not a regular file (/dev/full): nothing was kept anyway
        pass


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of a CSV, whole lines only: a row or header cut short by a kill or a full disk is dropped.

    Reading stops at the first line that is not a complete row (no newline, wrong field count, no step).
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], []
    lines = text.split("\n")[:-1]  # the part after the last newline is never a whole line
    if not lines:
        return [], []
    columns = next(csv.reader([lines[0]]))
    rows: list[dict[str, str]] = []
    for fields in csv.reader(lines[1:]):
        if len(fields) != len(columns):
            break
        row = dict(zip(columns, fields))
        try:
            float(row["step"])
        except (KeyError, ValueError):
            break
        rows.append(row)
    return columns, rows


def _truncate(path: Path, last_step: int) -> list[dict[str, str]]:
    """Keep the whole rows with step <= last_step (rewritten atomically); returns them."""
    columns, rows = _read(path)
    if not path.exists():
        return []
    kept = [row for row in rows if int(float(row["step"])) <= last_step]
    runs.atomic_write_text(path, _csv(kept, columns, header=True) if columns else "")
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

    def peak_lr(self) -> float:
        """The largest LR in metrics.csv (call after flush)."""
        return max((float(r["lr"]) for r in _read(self.run_dir / runs.METRICS_FILE)[1]), default=float("nan"))

    def missing_steps(self, next_step: int) -> str | None:
        """Why metrics.csv cannot continue at `next_step` (deleted, cut, or a step missing), else None."""
        steps = [int(float(r["step"])) for r in _read(self.run_dir / runs.METRICS_FILE)[1]]
        steps = [s for s in steps if s < next_step]
        if steps == list(range(next_step)):
            return None
        return (f"{runs.METRICS_FILE} holds {len(steps)} of the {next_step} steps before it"
                if (self.run_dir / runs.METRICS_FILE).exists() else f"{runs.METRICS_FILE} is missing")

    def restore(self, next_step: int, evals: list[dict[str, Any]], sharpness: list[dict[str, Any]]) -> None:
        """Resume at `next_step`: metrics.csv cut to it; eval.csv and sharpness.csv rewritten from the
        checkpoint's own rows, so a deleted or cut evaluation file loses nothing."""
        self.truncate(next_step)
        for name, rows in ((runs.EVAL_FILE, evals), (SHARPNESS_FILE, sharpness)):
            if rows:
                runs.atomic_write_text(self.run_dir / name, _csv(rows, list(rows[0].keys()), header=True))

    def truncate(self, next_step: int) -> None:
        """Resume at `next_step`: drop later rows on disk and reload the loss tail."""
        # Step rows are indexed by update (0..next_step-1); eval and sharpness rows by updates done.
        kept = _truncate(self.run_dir / runs.METRICS_FILE, next_step - 1)
        _truncate(self.run_dir / runs.EVAL_FILE, next_step)
        _truncate(self.run_dir / SHARPNESS_FILE, next_step)
        self._tail.clear()
        self._tail.extend(float(r["loss"]) for r in kept[-FINAL_LOSS_WINDOW:])
