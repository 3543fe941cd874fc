"""The run record: one declared shape, written with its schema version, read back by one decoding reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import make_cfg
from warmup_lab import runs
from warmup_lab.schedules import schedule_from_cfg
from warmup_lab.summary import (FIELDS, KEY_VALUES, SCHEMA_VERSION, SETTING_KEYS, is_finished, key_values,
                                read_summary, write_summary)


def _read_with_warning(run_dir: Path) -> tuple[object, list[str]]:
    said: list[str] = []
    return read_summary(run_dir, said.append), said


def test_non_finite_values_come_back_as_floats_and_declared_nulls_stay(tmp_path: Path) -> None:
    write_summary(tmp_path, {"status": runs.DIVERGED, "steps_run": 4, "init_loss": 2.3, "final_train_loss": math.nan,
                             "max_spike_ratio": math.inf, "best_eval_loss": None, "diverged_step": 3,
                             "spikes": [{"start": 1, "peak_ratio": math.inf}], "task_info": {"lambda0": -math.inf}})
    raw = json.loads((tmp_path / runs.SUMMARY_FILE).read_text())
    assert raw["schema"] == SCHEMA_VERSION and raw["final_train_loss"] == "nan" and raw["max_spike_ratio"] == "inf"

    summary = read_summary(tmp_path)
    assert summary is not None and is_finished(summary)
    assert math.isnan(summary["final_train_loss"]) and summary["max_spike_ratio"] == math.inf
    assert summary["best_eval_loss"] is None and summary["diverged_step"] == 3
    assert summary["spikes"][0]["peak_ratio"] == math.inf and summary["task_info"]["lambda0"] == -math.inf


def test_a_null_where_a_float_is_declared_reads_as_nan(tmp_path: Path) -> None:
    (tmp_path / runs.SUMMARY_FILE).write_text(json.dumps(
        {"schema": SCHEMA_VERSION, "status": "completed", "final_train_loss": None, "init_loss": 2}))
    summary = read_summary(tmp_path)
    assert summary is not None and math.isnan(summary["final_train_loss"])
    assert summary["init_loss"] == 2.0 and isinstance(summary["init_loss"], float)


@pytest.mark.parametrize("content, why", [
    ({"status": "completed", "final_train_loss": 0.1}, "no schema version"),
    ({"schema": SCHEMA_VERSION + 1, "status": "completed"}, f"schema {SCHEMA_VERSION + 1}"),
    ({"schema": SCHEMA_VERSION, "loss": 0.3}, "no 'status' field: not a warmup-lab run summary"),
    ({"schema": SCHEMA_VERSION, "status": "done"}, "status 'done' is not one of"),
    ({"schema": SCHEMA_VERSION, "status": "completed", "seed": "zero"}, "field 'seed' is 'zero', not int"),
    ({"schema": SCHEMA_VERSION, "status": "completed", "steps_run": True}, "field 'steps_run' is True, not int"),
    ([1, 2], "not a JSON object"),
])
def test_an_old_foreign_or_corrupt_summary_is_skipped_with_one_line_saying_why(tmp_path: Path, content, why) -> None:
    (tmp_path / runs.SUMMARY_FILE).write_text(json.dumps(content))
    summary, said = _read_with_warning(tmp_path)
    assert summary is None and len(said) == 1
    assert said[0].startswith(f"skipping {tmp_path / runs.SUMMARY_FILE}: ") and why in said[0]
    if "schema" in why:
        assert f"reads schema {SCHEMA_VERSION}" in said[0] and "re-run" in said[0]


def test_missing_and_unparsable_files_say_so(tmp_path: Path) -> None:
    assert _read_with_warning(tmp_path)[1] == [f"skipping {tmp_path / runs.SUMMARY_FILE}: missing (run not finished?)"]
    (tmp_path / runs.SUMMARY_FILE).write_bytes(b"{\"status\": ")
    assert "unreadable JSON" in _read_with_warning(tmp_path)[1][0]


def test_a_field_the_record_does_not_declare_is_refused_at_write(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not declared in warmup_lab.summary.RunSummary: final_trian_loss"):
        write_summary(tmp_path, {"status": "completed", "final_trian_loss": 0.1})  # type: ignore[typeddict-unknown-key]
    assert not (tmp_path / runs.SUMMARY_FILE).exists()


def test_setting_keys_and_the_key_values_the_trainer_records_are_one_declaration() -> None:
    cfg = make_cfg(["task=digits", "schedule.warmup_steps=7"])
    values = key_values(cfg, schedule_from_cfg(cfg).describe())
    assert tuple(values) == KEY_VALUES and set(KEY_VALUES) <= set(FIELDS)
    assert SETTING_KEYS == tuple(k for k in KEY_VALUES if k not in ("target_lr", "seed"))
    assert (values["task"], values["warmup_steps"], values["target_lr"]) == ("digits", 7, float(cfg.optimizer.lr))
