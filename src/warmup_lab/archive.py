"""Per-step curves of a whole sweep in one small file, so committed results redraw without re-training.

A sweep's run directories (`metrics.csv` each) stay on the machine that ran them; `results/<experiment>/`
keeps `runs.csv` (one row per run summary) and `curves.csv.gz`: every run's per-step training loss, LR
and spike flag, keyed by the run's `config_hash` (the column that ties it to its `runs.csv` row).
Values are written to 6 significant digits, which is below what a figure can show. Both are also
written as Parquet (`runs.parquet`, `curves.parquet`) with typed columns (step int64, loss and lr
float64, spike bool), which is what the loaders here read first; the CSVs are for reading by eye.

Reading is vectorized: the metrics.csv files of every run are read as bytes and parsed as one table
(10,000 runs in a few seconds, not one pandas parse per file); a file whose header differs from the
others, or that does not parse, is read on its own.
"""

from __future__ import annotations

import gzip
import io
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from warmup_lab import runs

CURVES_FILE, RUNS_FILE = "curves.csv.gz", "runs.csv"
CURVES_PARQUET, RUNS_PARQUET = "curves.parquet", "runs.parquet"
RUN_KEY = "config_hash"
CURVE_COLS = ("step", "loss", "lr", "spike")
CURVE_TYPES = {"step": "int64", "loss": "float64", "lr": "float64", "spike": "bool"}


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """Step columns with their types: step int64, spike bool, every other column but the run key float64
    (a torn or foreign value becomes NaN, never turns a column into strings)."""
    cols = {c: pd.to_numeric(table[c], errors="coerce") for c in table if c != RUN_KEY}
    if "step" in cols:
        cols["step"] = cols["step"].fillna(-1).astype("int64")
    if "spike" in cols:
        cols["spike"] = cols["spike"].fillna(0).astype(float) > 0
    for c in cols:
        if c not in ("step", "spike"):
            cols[c] = cols[c].astype("float64")
    return pd.DataFrame({**({RUN_KEY: table[RUN_KEY].astype(str)} if RUN_KEY in table else {}), **cols})


def _parse(data: bytes, header: list[str]) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), header=None, names=header)


def read_metrics(paths: Sequence[str]) -> tuple[pd.DataFrame, dict[str, tuple[int, int]]]:
    """Every `<path>/metrics.csv` in one typed table, and each path's row span in it.

    Files that share the first file's header are parsed together; any other readable file on its own.
    A missing or unparseable file has no span (its curve is then looked up in the archive)."""
    bodies: list[bytes] = []
    counts: list[int] = []
    order: list[str] = []
    alone: list[pd.DataFrame] = []
    alone_paths: list[str] = []
    header: bytes | None = None
    for path in paths:
        try:
            data = (Path(path) / runs.METRICS_FILE).read_bytes()
        except OSError:
            continue
        head, _, body = data.partition(b"\n")
        header = head if header is None else header
        if head != header or body.count(b"\n") + (not body.endswith(b"\n")) * bool(body) == 0:
            single = _read_one(path)
            if single is not None:
                alone.append(single)
                alone_paths.append(path)
            continue
        if body and not body.endswith(b"\n"):
            body += b"\n"
        bodies.append(body)
        counts.append(body.count(b"\n"))
        order.append(path)
    frames: list[pd.DataFrame] = []
    spans: dict[str, tuple[int, int]] = {}
    if bodies:
        try:
            frames.append(_parse(b"".join(bodies), header.decode().strip().split(",")))  # type: ignore[union-attr]
            starts = np.concatenate([[0], np.cumsum(counts)])
            spans = {p: (int(a), int(b)) for p, a, b in zip(order, starts[:-1], starts[1:])}
        except (ValueError, pd.errors.ParserError):  # a torn row somewhere: each file on its own
            for path in order:
                single = _read_one(path)
                if single is not None:
                    alone.append(single)
                    alone_paths.append(path)
    offset = len(frames[0]) if frames else 0
    for path, frame in zip(alone_paths, alone):
        spans[path] = (offset, offset + len(frame))
        offset += len(frame)
    table = pd.concat(frames + alone, ignore_index=True) if frames or alone else pd.DataFrame(columns=CURVE_COLS)
    return _typed(table), spans


def _read_one(path: str) -> pd.DataFrame | None:
    try:
        return pd.read_csv(Path(path) / runs.METRICS_FILE)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


class Curves:
    """Per-step curves by run: from the run's own metrics.csv when it is on this machine, else the archive.

    `load(paths)` reads the run directories' files in one pass; `get(row)` then costs a slice."""

    def __init__(self, table: pd.DataFrame | None = None):
        self.archive = _typed(table) if table is not None else pd.DataFrame(columns=[RUN_KEY, *CURVE_COLS])
        self.by_key = {str(k): v for k, v in self.archive.groupby(RUN_KEY, sort=False).indices.items()} \
            if len(self.archive) else {}
        self.runs, self.spans = pd.DataFrame(columns=CURVE_COLS), {}

    def load(self, paths: Iterable[object]) -> Curves:
        """Read the metrics.csv of every run directory in `paths` (non-strings are skipped)."""
        self.runs, self.spans = read_metrics([p for p in dict.fromkeys(paths) if isinstance(p, str)])
        return self

    def _rows(self, row: pd.Series) -> tuple[pd.DataFrame, np.ndarray] | None:
        span = self.spans.get(row.get("run_path"))
        if span is not None:
            return self.runs, np.arange(*span)
        path = row.get("run_path")
        if isinstance(path, str) and path not in self.spans and not self.spans:
            single = _read_one(path)  # not loaded: read this one directory
            if single is not None:
                return _typed(single), np.arange(len(single))
        idx = self.by_key.get(str(row.get(RUN_KEY, "")))
        return (self.archive, idx) if idx is not None else None

    def get(self, row: pd.Series) -> pd.DataFrame | None:
        """The curve of one runs.csv row (None when neither the run directory nor the archive has it)."""
        found = self._rows(row)
        if found is None:
            return None
        table, idx = found
        return table.iloc[idx][[c for c in CURVE_COLS if c in table]].reset_index(drop=True)

    def table(self, res: pd.DataFrame) -> pd.DataFrame:
        """The curves of every row of `res`, keyed by RUN_KEY, in row order (runs without one left out)."""
        parts: list[pd.DataFrame] = []
        run_idx: list[np.ndarray] = []
        run_keys: list[np.ndarray] = []
        for _, row in res[[c for c in ("run_path", RUN_KEY) if c in res]].iterrows():
            found = self._rows(row)
            if found is None:
                continue
            table, idx = found
            key = np.full(len(idx), str(row.get(RUN_KEY, "")), dtype=object)
            if table is self.runs:
                run_idx.append(idx)
                run_keys.append(key)
            else:
                parts.append(table.iloc[idx][[c for c in CURVE_COLS if c in table]].assign(**{RUN_KEY: key}))
        if run_idx:
            own = self.runs.iloc[np.concatenate(run_idx)][[c for c in CURVE_COLS if c in self.runs]]
            parts.insert(0, own.assign(**{RUN_KEY: np.concatenate(run_keys)}))
        if not parts:
            return pd.DataFrame(columns=[RUN_KEY, *CURVE_COLS])
        table = pd.concat(parts, ignore_index=True)
        return table[[RUN_KEY, *[c for c in CURVE_COLS if c in table]]]

    @classmethod
    def read(cls, folder: Path | str) -> Curves:
        """The archive in `folder` (curves.parquet, else curves.csv.gz), or an empty one."""
        folder = Path(folder)
        if (folder / CURVES_PARQUET).is_file():
            return cls(pd.read_parquet(folder / CURVES_PARQUET))
        if (folder / CURVES_FILE).is_file():
            return cls(pd.read_csv(folder / CURVES_FILE, dtype={RUN_KEY: str}, float_precision="round_trip"))
        return cls()


def read_runs(dirs: Iterable[Path | str]) -> pd.DataFrame:
    """The runs of committed results folders (runs.parquet, else runs.csv with every float as written):
    the report's input when no run directory is left."""
    frames = []
    for d in map(Path, dirs):
        if (d / RUNS_PARQUET).is_file():
            frames.append(pd.read_parquet(d / RUNS_PARQUET))
        elif (d / RUNS_FILE).is_file():
            frames.append(pd.read_csv(d / RUNS_FILE, dtype={RUN_KEY: str}, float_precision="round_trip"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_curves(dirs: Iterable[Path | str]) -> Curves:
    """The curves archives of the report's inputs (a committed results folder holds one), merged: what a
    report draws from when the run directories are not here. Never the output folder's own archive."""
    frames = [Curves.read(d).archive for d in dirs]
    frames = [f for f in frames if len(f)]
    return Curves(pd.concat(frames, ignore_index=True) if frames else None)


def _nulls_or_text(col: pd.Series) -> pd.Series:
    return col.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))


def write_runs_parquet(df: pd.DataFrame, out: Path | str) -> None:
    """runs.parquet beside runs.csv; an object column of mixed kinds is stored as text."""
    import pyarrow as pa

    typed = df.copy()
    for col in typed.columns[typed.dtypes == object]:
        try:
            pa.array(typed[col], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            typed[col] = _nulls_or_text(typed[col])
    typed.to_parquet(Path(out) / RUNS_PARQUET, index=False)


def _six_digits(x: pd.Series) -> np.ndarray:
    """Values rounded to 6 significant digits, as doubles whose shortest form is those digits."""
    v = x.to_numpy(dtype=float, copy=True)
    ok = np.isfinite(v) & (v != 0)
    d = 5 - np.floor(np.log10(np.abs(v[ok]))).astype(int)
    scale = 10.0 ** np.abs(d)
    v[ok] = np.where(d >= 0, np.round(v[ok] * scale) / scale, np.round(v[ok] / scale) * scale)
    return v


def _write_csv_gz(table: pd.DataFrame, path: Path) -> None:
    """pandas' to_csv(float_format="%.6g") output, written by Arrow (a 1.2M-row table in seconds, not a minute)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cols = {c: _six_digits(table[c]) if table[c].dtype.kind == "f" else table[c] for c in table}
    if "spike" in cols:
        cols["spike"] = table["spike"].astype("int8")
    body = io.BytesIO()
    pacsv.write_csv(pa.Table.from_pandas(pd.DataFrame(cols), preserve_index=False), body,
                    pacsv.WriteOptions(include_header=False, quoting_style="none"))
    text = (",".join(table.columns) + "\n").encode() + body.getvalue()
    path.write_bytes(gzip.compress(text, compresslevel=6, mtime=0))


def write_curves(res: pd.DataFrame, out: Path | str, curves: Curves) -> Path | None:
    """Write `out/curves.csv.gz` and `out/curves.parquet` for the runs of `res` from `curves`; None when
    none has a curve."""
    table = curves.table(res)
    if table.empty:
        return None
    table.to_parquet(Path(out) / CURVES_PARQUET, index=False)
    _write_csv_gz(table, Path(out) / CURVES_FILE)
    return Path(out) / CURVES_FILE
