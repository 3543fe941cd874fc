"""timing.py and the breakdown `make sweep` prints: every core-second of wall x cores has one place."""

from __future__ import annotations

import json
import time

import pytest

from warmup_lab import sweep, timing


def test_a_job_logs_one_line_of_its_phases_when_the_sweep_asks(tmp_path, monkeypatch):
    log = tmp_path / "t.jsonl"
    monkeypatch.setenv(timing.TIMING_ENV, str(log))
    monkeypatch.setitem(timing._process, "last_end", None)
    for _ in range(2):
        timing.begin_job()
        with timing.phase("train"):
            time.sleep(0.01)
        timing.add("wandb", 0.5)
        timing.end_job()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 2 and "startup" in rows[0] and "launcher" in rows[1]  # the 2nd job's gap since the 1st
    assert all(r["train"] >= 0.01 and r["wandb"] == 0.5 and r["bookkeeping"] >= 0 for r in rows)
    log.write_text(log.read_text() + '{"pid": 1, "train"')  # a torn last line (a job killed mid-write)
    totals = timing.read_log(log)
    assert totals["jobs"] == 2 and totals["wandb"] == 1.0


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(timing.TIMING_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    timing.begin_job()
    timing.end_job()
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_phase_is_refused():
    with pytest.raises(KeyError, match="timing phase 'trian'"):
        timing.add("trian", 1.0)


def test_the_breakdown_accounts_for_wall_times_cores():
    jobs = {**{k: 0.0 for k in timing.PHASES}, "train": 90.0, "launcher": 4.0, "wandb": 2.0, "jobs": 10}
    rows = sweep.breakdown(jobs, report_s=1.0, idle_s=2.0, wall=50.0, cores=2)
    assert sum(rows.values()) == pytest.approx(100.0) and rows["training steps"] == 90.0
    assert rows["other (launcher process, W&B service, OS)"] == pytest.approx(1.0)
    lines = sweep.breakdown_lines(rows, 50.0, 2, 10)
    assert lines[0] == "where the core time went: 50 s wall x 2 cores = 100 core-s, 10 jobs"
    assert any(line.split() == ["training", "steps", "90.0", "core-s", "90.0%"] for line in lines)



def test_a_timed_function_is_charged_to_its_phase_on_every_call(monkeypatch):
    monkeypatch.delenv(timing.TIMING_ENV, raising=False)

    @timing.timed("eval")
    def evaluate(x):
        time.sleep(0.01)
        return x + 1

    timing.begin_job()
    assert evaluate(1) == 2 and evaluate(2) == 3
    assert timing._job["eval"] >= 0.02
    timing.end_job()
