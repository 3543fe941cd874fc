"""excursions.py: the longest stretch above the divergence ceiling that came back, against the patience."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from warmup_lab import excursions


def test_streaks_count_the_longest_excursion_that_came_back_and_the_one_still_open():
    loss = np.array([2.0, 30, 30, 30, 2.0, 25, 2.0, 40, 40])
    assert excursions.streaks(loss, limit=20.0) == (3, 2, False)
    assert excursions.streaks(np.array([2.0, 30, math.nan]), limit=20.0) == (0, 2, True)
    assert excursions.streaks(np.array([1.0, 2.0]), limit=20.0) == (0, 0, False)


class _Curves:
    def __init__(self, by_hash):
        self.by_hash = by_hash

    def get(self, row):
        loss = self.by_hash.get(row["config_hash"])
        return None if loss is None else pd.DataFrame({"step": range(len(loss)), "loss": loss})


def test_the_section_names_the_longest_recovered_run_and_the_patience(tmp_path):
    base = {"task": "t", "warmup": "linear", "warmup_steps": 10, "seed": 0, "init_loss": 2.0,
            "detect.divergence.factor": 10.0, "detect.divergence.ceiling": None, "detect.divergence.patience": 50}
    res = pd.DataFrame([{**base, "config_hash": "a", "target_lr": 0.1, "status": "completed"},
                        {**base, "config_hash": "b", "target_lr": 0.4, "status": "diverged"},
                        {**base, "config_hash": "c", "target_lr": 0.8, "status": "diverged"}])
    curves = _Curves({"a": [2.0, 25, 25, 1.0], "b": [2.0] + [30.0] * 50, "c": [2.0, math.inf]})
    written = {}
    md = excursions.section(res, curves, tmp_path, lambda df, path: written.setdefault(path.name, df))
    assert list(written["excursions.csv"]["longest_recovered"]) == [2, 0, 0]
    line = next(l for l in md if l.startswith("- **t**"))
    assert "came back: 2 steps (linear@10, lr 0.1, seed 0)" in line and "patience 50 steps" in line
    assert "1 non-finite, 1 by the patience" in line


def test_a_setting_key_that_varies_within_a_task_names_the_rows(tmp_path):
    """Post-LN and Pre-LN runs of one task share warmup, LR and seed: their rows must say which is which."""
    base = {"task": "t", "warmup": "none", "warmup_steps": 0, "seed": 0, "init_loss": 2.0, "target_lr": 0.1,
            "status": "completed", "detect.divergence.factor": 10.0, "detect.divergence.ceiling": None,
            "detect.divergence.patience": 50}
    res = pd.DataFrame([{**base, "norm": "post", "config_hash": "a"}, {**base, "norm": "pre", "config_hash": "b"}])
    curves = _Curves({"a": [2.0, 25, 1.0], "b": [2.0, 1.0]})
    written = {}
    md = excursions.section(res, curves, tmp_path, lambda df, path: written.setdefault(path.name, df))
    table = written["excursions.csv"]
    assert list(table.columns[:3]) == ["task", "norm", "warmup"] and list(table["norm"]) == ["post", "pre"]
    assert "came back: 1 steps (norm=post, none@0, lr 0.1, seed 0)" in next(l for l in md if l.startswith("- **t**"))
    assert "norm" not in excursions.table(res.assign(norm="pre"), curves).columns  # one value: not a column
