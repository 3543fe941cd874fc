"""The curves archive and the Parquet twins: one-pass reading of many metrics.csv, typed columns, round trips."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd

from warmup_lab import archive, runs
from warmup_lab.record import MetricsFile


def _run(root, name, losses, spikes=None):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    m = MetricsFile(run_dir)
    for t, loss in enumerate(losses):
        m.add_step(t, loss, 0.1 * (t + 1), 1.0, bool(spikes and t in spikes))
    m.flush()
    return str(run_dir)


def test_one_pass_read_matches_each_file_read_alone_and_skips_what_is_missing(tmp_path):
    a = _run(tmp_path, "a", [2.0, 1.5, float("inf")], spikes={1})
    b = _run(tmp_path, "b", [3.0, float("nan")])
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / runs.METRICS_FILE).write_text("step,loss\n0,4.0\n1,3.5")  # another header, no final newline
    table, spans = archive.read_metrics([a, b, str(odd), str(tmp_path / "missing")])
    assert set(spans) == {a, b, str(odd)}
    for path in (a, b, str(odd)):
        alone = pd.read_csv(f"{path}/{runs.METRICS_FILE}")
        got = table.iloc[slice(*spans[path])]
        assert list(got["step"]) == list(alone["step"])
        np.testing.assert_array_equal(got["loss"].to_numpy(), alone["loss"].to_numpy())
    assert table.dtypes["step"] == "int64" and table.dtypes["spike"] == bool and table.dtypes["loss"] == "float64"
    assert list(table.iloc[slice(*spans[a])]["spike"]) == [False, True, False]


def test_a_torn_row_falls_back_to_reading_each_file_alone(tmp_path):
    a = _run(tmp_path, "a", [2.0, 1.5])
    b = _run(tmp_path, "b", [3.0, 2.5])
    with open(f"{b}/{runs.METRICS_FILE}", "a") as fh:
        fh.write("2,2.0,0.3")  # a row cut mid-way by a kill
    table, spans = archive.read_metrics([a, b])
    assert list(table.iloc[slice(*spans[a])]["loss"]) == [2.0, 1.5]
    assert list(table.iloc[slice(*spans[b])]["step"])[:2] == [0, 1]


def test_curves_and_runs_are_written_as_csv_and_typed_parquet_and_read_back(tmp_path):
    paths = [_run(tmp_path, f"r{i}", [2.0 / (t + 1) + 1e-7 * i for t in range(5)], spikes={2}) for i in range(3)]
    res = pd.DataFrame({"run_path": paths, archive.RUN_KEY: [f"h{i}" for i in range(3)],
                        "target_lr": [0.1, 0.2, 0.3], "status": runs.COMPLETED, "mixed": [1, "two", None]})
    out = tmp_path / "out"
    out.mkdir()
    archive.write_runs_parquet(res, out)
    archive.write_curves(res, out, archive.Curves().load(paths))
    parquet = pd.read_parquet(out / archive.CURVES_PARQUET)
    assert len(parquet) == 15 and parquet.dtypes["spike"] == bool and parquet.dtypes["step"] == "int64"
    text = pd.read_csv(out / archive.CURVES_FILE)
    np.testing.assert_allclose(text["loss"], parquet["loss"], rtol=5e-6)  # the CSV keeps 6 digits
    assert gzip.open(out / archive.CURVES_FILE).readline() == b"config_hash,step,loss,lr,spike\n"
    back = archive.Curves.read(out)  # no run directory needed: the archive alone redraws
    row = pd.Series({archive.RUN_KEY: "h1"})
    pd.testing.assert_frame_equal(back.get(row), parquet[parquet[archive.RUN_KEY] == "h1"]
                                  .drop(columns=archive.RUN_KEY).reset_index(drop=True))
    saved = archive.read_runs([out])
    assert list(saved["target_lr"]) == [0.1, 0.2, 0.3] and saved.dtypes["target_lr"] == "float64"
    assert list(saved["mixed"]) == ["1", "two", None]  # mixed kinds kept as text, nulls as nulls
