"""Per-step curves of a whole sweep in one small file, so committed results redraw without re-training.

A sweep's run directories (`metrics.csv` each) stay on the machine that ran them; `results/<experiment>/`
keeps `runs.csv` (one row per run summary) and `curves.csv.gz`: every run's per-step training loss, LR
and spike flag, keyed by the run's `config_hash` (the column that ties it to its `runs.csv` row).
Values are written to 6 significant digits, which is below what a figure can show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable
import pandas as pd

from warmup_lab import runs

CURVES_FILE, RUNS_FILE = "curves.csv.gz", "runs.csv"
RUN_KEY = "config_hash"
CURVE_COLS = ("step", "loss", "lr", "spike")


def _read_metrics(run_path: str | Path) -> pd.DataFrame | None:
    try:
        m = pd.read_csv(Path(run_path) / runs.METRICS_FILE)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return m[[c for c in CURVE_COLS if c in m]]


class Curves:
    """Per-step curves by run: from the run's own metrics.csv when it is on this machine, else the archive."""

    def __init__(self, table: pd.DataFrame | None = None):
        self.by_run = {} if table is None else {str(k): g.drop(columns=RUN_KEY).reset_index(drop=True)
                                                for k, g in table.groupby(RUN_KEY, sort=False)}

    def get(self, row: pd.Series) -> pd.DataFrame | None:
        """The curve of one runs.csv row (None when neither the run directory nor the archive has it)."""
        path = row.get("run_path")
        m = _read_metrics(path) if isinstance(path, str) else None
        return m if m is not None else self.by_run.get(str(row.get(RUN_KEY, "")))

    @classmethod
    def read(cls, path: Path | str) -> Curves:
        """The archive at `path`, or an empty one (curves then come from run directories only)."""
        return cls(pd.read_csv(path, dtype={RUN_KEY: str})) if Path(path).is_file() else cls()


def read_runs(dirs: Iterable[Path | str]) -> pd.DataFrame:
    """The runs.csv of committed results folders (the report's input when no run directory is left), every
    float as written (round_trip)."""
    frames = [pd.read_csv(Path(d) / RUNS_FILE, dtype={RUN_KEY: str}, float_precision="round_trip")
              for d in dirs if (Path(d) / RUNS_FILE).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_curves(dirs: Iterable[Path | str]) -> Curves:
    """The curves archives of the report's inputs (a committed results folder holds one), merged: what a
    report draws from when the run directories are not here. Never the output folder's own archive."""
    frames = [pd.read_csv(Path(d) / CURVES_FILE, dtype={RUN_KEY: str}, float_precision="round_trip")
              for d in dirs if (Path(d) / CURVES_FILE).is_file()]
    return Curves(pd.concat(frames, ignore_index=True) if frames else None)


def write_curves(res: pd.DataFrame, out: Path | str, curves: Curves) -> Path | None:
    """Write `out/curves.csv.gz` for the runs of `res` (runs.csv rows) from `curves`; None when none has one."""
    frames: list[pd.DataFrame] = []
    for _, row in res.iterrows():
        m = curves.get(row)
        if m is not None and len(m):
            frames.append(m.assign(**{RUN_KEY: str(row[RUN_KEY])}))
    if not frames:
        return None
    path = Path(out) / CURVES_FILE
    table = pd.concat(frames, ignore_index=True)
    table = table[[RUN_KEY, *[c for c in CURVE_COLS if c in table]]]
    table.to_csv(path, index=False, float_format="%.6g", compression={"method": "gzip", "mtime": 0})
    return path

