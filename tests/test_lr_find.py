"""warmup_lab.lr_find: the range test's smoothing, early stop and suggestions, and one real ramp run."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from warmup_lab import lr_find


def test_smoothing_is_a_bias_corrected_ema_cut_at_four_times_the_best():
    assert lr_find.smooth([2.0] * 5) == pytest.approx([2.0] * 5)  # bias correction: no pull towards 0
    by_hand, avg = [], 0.0
    for t, x in enumerate([3.0, 1.0, 2.0]):
        avg = 0.98 * avg + 0.02 * x
        by_hand.append(avg / (1 - 0.98 ** (t + 1)))
    assert lr_find.smooth([3.0, 1.0, 2.0]) == pytest.approx(by_hand)
    losses = [1.0] * 10 + [1000.0] * 10
    cut = lr_find.smooth(losses, beta=0.0)  # no smoothing: the first point above 4 x best ends the curve
    assert len(cut) == 11 and cut[-1] == 1000.0
    assert len(lr_find.smooth([1.0, 1.0, math.nan, 1.0])) == 2  # a non-finite loss ends it too


def test_suggestions_steepest_descent_and_minimum_over_ten():
    n = 100
    lrs = list(np.geomspace(1e-6, 1.0, n))
    x = np.log10(lrs)
    losses = list(2.0 - 1.5 / (1 + np.exp(-3 * (x + 3))) + 5.0 * np.exp(3 * (x - 0.0)))  # drop near 1e-3, blow-up at 1
    result = lr_find.analyse(lrs, losses, n, beta=0.0, early_stop=None)
    steep = result["steepest"]
    assert steep["step"] == int(np.argmin(np.gradient(losses[10:-1]))) + 10
    assert 1e-4 < steep["lr"] < 1e-2  # the steepest drop of the sigmoid, inside the ramp
    i_min = int(np.argmin(losses[10:n - 5])) + 10
    assert result["minimum"]["step"] == i_min and result["minimum_over_10"] == pytest.approx(lrs[i_min] / 10)


def test_help_shows_every_options_default(capsys):
    with pytest.raises(SystemExit) as stop:
        lr_find.parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 0
    for option, default in [("--min-lr MIN_LR", "1e-08"), ("--max-lr MAX_LR", "1"), ("--steps STEPS", "100"),
                            ("--beta BETA", "0.98"), ("--early-stop EARLY_STOP", "4.0")]:
        assert re.search(rf"{option} [^()]*\(default {re.escape(default)}\)", text), (option, text)


def test_ramp_overrides_refuse_what_the_range_test_sets():
    assert "schedule.warmup=geometric" in lr_find.ramp_overrides(1e-6, 1.0, 50)
    assert "schedule.warmup_steps=49" in lr_find.ramp_overrides(1e-6, 1.0, 50)


@pytest.mark.slow
def test_lr_find_on_a_tiny_task_suggests_inside_its_ramp_and_writes_its_files(tmp_path):
    proc = run_cli("warmup_lab.lr_find", ["--steps", "30", "--min-lr", "1e-5", "--max-lr", "10", "task=modadd",
                                          "train.batch_size=16", "train.progress=false", "logger=none",
                                          f"runs_root={tmp_path / 'runs'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    assert first.startswith("lr-find: steepest descent ") and "minimum/10" in first
    path = Path(first.rsplit("-> ", 1)[1])
    result = json.loads(path.read_text())
    assert (path.parent / lr_find.FIGURE_FILE).stat().st_size > 10_000
    lrs = result["lrs"]
    assert lrs == pytest.approx([1e-5 * (10 / 1e-5) ** (t / 29) for t in range(len(lrs))], rel=1e-6)  # the ramp
    assert 1e-5 <= result["steepest"]["lr"] <= 10 and result["steepest"]["lr"] in lrs
    again = run_cli("warmup_lab.lr_find", ["--steps", "30", "--min-lr", "1e-5", "--max-lr", "10", "task=modadd",
                                           "train.batch_size=16", "train.progress=false", "logger=none",
                                           f"runs_root={tmp_path / 'runs'}"], cwd=tmp_path)
    assert again.stdout.splitlines()[0] == first  # a normal run: the second call finds it finished
    bad = run_cli("warmup_lab.lr_find", ["optimizer.lr=0.1", f"runs_root={tmp_path / 'bad'}"], cwd=tmp_path)
    assert bad.returncode == 2 and "optimizer.lr" in bad.stderr and not (tmp_path / "bad").exists()


def test_the_figure_marks_both_suggestions_on_the_curve_with_legend_entries(tmp_path):
    n = 100
    lrs = list(np.geomspace(1e-6, 1.0, n))
    x = np.log10(lrs)
    losses = list(2.0 - 1.5 / (1 + np.exp(-3 * (x + 3))) + 5.0 * np.exp(3 * (x - 0.0)))
    result = lr_find.analyse(lrs, losses, n, beta=0.0, early_stop=None)
    fig = lr_find.figure(result, tmp_path / "lr_find.png", "a title")
    assert (tmp_path / "lr_find.png").stat().st_size > 10_000
    ax = fig.axes[0]
    assert ax.get_xlabel() == "learning rate (log)" and ax.get_ylabel() == "smoothed training loss"
    assert ax.get_xscale() == "log"
    labels = ax.get_legend_handles_labels()[1]
    marks = {}
    for line, label in zip(*ax.get_legend_handles_labels()):
        if label.startswith("suggestion: "):
            marks[label.split(",")[0]] = (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
    assert set(marks) == {"suggestion: steepest descent (Lightning)", "suggestion: minimum/10 (fastai)"}, labels
    assert marks["suggestion: steepest descent (Lightning)"][0] == result["steepest"]["lr"]
    assert marks["suggestion: minimum/10 (fastai)"][0] == pytest.approx(result["minimum_over_10"])
    curve = np.log(result["lrs"]), np.asarray(result["smoothed"])
    for lr, loss in marks.values():  # each marker sits on the curve as drawn (linear in log LR between points)
        assert loss == pytest.approx(float(np.interp(np.log(lr), *curve)), rel=1e-9)
    # the tick labels are plain numbers, none of matplotlib's crowded minor labels
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "0.01" in shown and "1e-4" in shown and not any(t.get_text() for t in ax.xaxis.get_minorticklabels())


def test_every_override_the_ramp_owns_is_refused_in_one_line_before_anything_runs(tmp_path, monkeypatch):
    from warmup_lab.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="drop them") as err:  # a command copied from advise holds several
        lr_find.lr_find(["task=digits", "optimizer.lr=0.1", "train.steps=50", "+schedule.warmup_steps=3"])
    assert "optimizer.lr=0.1 train.steps=50 +schedule.warmup_steps=3" in str(err.value)
    assert not any(tmp_path.iterdir())
