"""Where a sweep's core time goes: each job's phases, appended to a log the sweep driver sums up.

`warmup-lab sweep` sets WARMUP_LAB_TIMING to a file; every job (one run, in whatever worker process
runs it) then appends one JSON line of wall seconds per phase once it is completely done, W&B's finish
included. Phases are measured with perf_counter inside the job's process, which on a machine whose
workers each own a core is that core's time. Without the variable nothing is recorded or written.

`sweep.breakdown` adds the report, the machine's idle core time (/proc/stat) and the remainder
(the launcher's own process, W&B's service processes, the OS) to account for wall x cores.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

TIMING_ENV = "WARMUP_LAB_TIMING"
# phase -> what the breakdown calls it (in this order)
PHASES = {
    "startup": "worker start-up and imports",
    "launcher": "launcher between runs (config composition, job set-up)",
    "bookkeeping": "run bookkeeping (validate, lock, hash, config and summary files)",
    "build": "data, model and optimizer build",
    "wandb": "W&B (init, logging, finish)",
    "eval": "evaluation",
    "train": "training steps",
    "checkpoint": "checkpoints",
}

_job: dict[str, float] = {}
_process = {"last_end": None}  # type: dict[str, float | None]


def enabled() -> bool:
    return bool(os.environ.get(TIMING_ENV))


def _process_age_s() -> float:
    """Seconds since this process started (Linux /proc), else 0: the first job's start-up share."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return max(0.0, time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def begin_job() -> None:
    """At a job's entry: the time since the previous job of this process ended (or since it started) is charged."""
    _job.clear()
    now = time.perf_counter()
    last = _process["last_end"]
    if last is None:
        _job["startup"] = _process_age_s()
    else:
        _job["launcher"] = now - last
    _job["_began"] = now


def add(phase: str, seconds: float) -> None:
    if phase not in PHASES:
        raise KeyError(f"timing phase {phase!r} is not one of {sorted(PHASES)}")
    _job[phase] = _job.get(phase, 0.0) + seconds


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    tick = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - tick)


def timed(name: str) -> Callable[[F], F]:
    """A function whose every call is charged to phase `name`."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with phase(name):
                return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap


def end_job() -> None:
    """At a job's exit: what no phase claimed is bookkeeping; one line goes to the log (when enabled)."""
    now = time.perf_counter()
    began = _job.pop("_began", now)
    claimed = sum(v for k, v in _job.items() if k not in ("startup", "launcher"))
    _job["bookkeeping"] = _job.get("bookkeeping", 0.0) + max(0.0, now - began - claimed)
    _process["last_end"] = now
    path = os.environ.get(TIMING_ENV)
    if path:
        line = json.dumps({"pid": os.getpid(), **{k: round(v, 6) for k, v in _job.items()}}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one short write: atomic with O_APPEND
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    _job.clear()


def read_log(path: Path) -> dict[str, float]:
    """Seconds per phase, summed over the jobs of one log (a torn last line is skipped)."""
    totals = {k: 0.0 for k in PHASES}
    totals["jobs"] = 0
    if not path.exists():
        return totals
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        totals["jobs"] += 1
        for key in PHASES:
            totals[key] += float(row.get(key, 0.0))
    return totals


def idle_core_s() -> float:
    """The machine's idle core-seconds since boot (/proc/stat idle + iowait), else nan off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")
