"""hydra/sweeper=grid (hydra_plugins/warmup_lab_grid): Hydra's grid, checked up front on a covering set."""

from __future__ import annotations

import itertools

import pytest

from conftest import run_cli
from hydra_plugins.warmup_lab_grid.sweeper import GridSweeper, covering


def test_covering_keeps_job_order_and_has_every_override_value():
    batch = [[f"a={a}", f"lr={lr}", f"seed={s}"] for a, lr, s in itertools.product("xyzw", range(6), range(5))]
    chosen = covering(batch)
    assert set(itertools.chain.from_iterable(chosen)) == set(itertools.chain.from_iterable(batch))
    assert chosen == [job for job in batch if job in chosen]  # in sweep order
    assert len(chosen) < len(batch) / 5  # 13 of 120: what makes the up-front check cheap


@pytest.mark.parametrize("mode,checked", [("covering", 13), ("all", 120)])
def test_the_sweeper_composes_the_covering_set_or_every_job(mode, checked, monkeypatch):
    seen = []
    # Hydra's own check composes each job it is given; here it records them (its parent class as imported:
    # Hydra's plugin scan re-executes its core plugins, so the name may point at a newer copy).
    monkeypatch.setattr(GridSweeper.__mro__[1], "validate_batch_is_legal", lambda self, batch: seen.extend(batch))
    batch = [[f"a={a}", f"lr={lr}", f"seed={s}"] for a, lr, s in itertools.product("xyzw", range(6), range(5))]
    sweeper = GridSweeper.__new__(GridSweeper)
    sweeper.validate = mode
    sweeper.validate_batch_is_legal(batch)
    assert len(seen) == checked


def test_an_unknown_validate_mode_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"hydra.sweeper.validate='some'.*covering, all"):
        GridSweeper(validate="some")


@pytest.mark.slow
def test_a_bad_group_option_late_in_the_grid_fails_before_any_run(tmp_path):
    root = tmp_path / "runs"
    proc = run_cli("warmup_lab.train", ["-m", "task=reverse", "train.steps=2", "logger=none", "threads=1",
                                        "train.progress=false", "seed=0,1,2", "optimizer=adamw,nosuch", "hydra/sweeper=grid",
                                        f"runs_root={root}"], cwd=tmp_path)
    assert proc.returncode != 0 and "nosuch" in proc.stderr
    assert not root.exists() or not [p for p in root.iterdir() if p.is_dir()]  # no run started
