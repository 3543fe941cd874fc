"""warmup_lab.advise and its rules (warmup_lab.advice): synthetic probes for the rules, real runs for the command."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from warmup_lab import advise, runs
from warmup_lab.advice import Plan, advise_from, answer_lines
from warmup_lab.errors import ConfigError

GRID = [0.1 * 2 ** (k / 2) for k in range(10)]  # 0.1 .. 2.26 on a x2^(1/2) grid


def falling(w: int, lr: float, seed: int) -> float:
    return 1.0 / (1 + lr) + 0.01 * seed


def probes(edges: dict[int, float], seeds=(0, 1, 2), lrs=GRID, l0=2.3, loss=falling) -> pd.DataFrame:
    """Every seed probed at every LR: stable iff lr <= edge of its warmup length, final loss `loss(w, lr, seed)`
    (by default falling with LR, the same at every warmup)."""
    rows = []
    for w, edge in edges.items():
        for seed in seeds:
            for lr in lrs:
                ok = lr <= edge * (1 + 1e-9)
                rows.append({"warmup_steps": w, "seed": seed, "lr": lr,
                             "status": runs.COMPLETED if ok else runs.DIVERGED, "init_loss": l0,
                             "final_train_loss": loss(w, lr, seed) if ok else math.nan,
                             "final_eval_loss": 1.1 / (1 + lr) if ok else math.nan, "baseline_loss": 2.3,
                             "core_s": 4.0})
    return pd.DataFrame(rows)


def test_the_pick_is_the_best_stable_lr_with_a_margin_at_the_shortest_warmup():
    edge0, edge12 = GRID[4], GRID[8]  # 0.4 without warmup, 1.6 with 12 steps
    advice = advise_from(probes({0: edge0, 12: edge12}), Plan([0, 1, 2], [0, 12]), "learned_0.9", 2 ** 0.5,
                         "linear", 120)
    pick = advice["pick"]
    # the best loss is at the highest stable LR (1.6), but 1.6 x 2^0.5 is above every low end; the next, 1.13, has
    # the margin only with 12 steps of warmup
    assert pick["lr"] == pytest.approx(GRID[7]) and pick["warmup_steps"] == 12
    assert advice["answer"] == ("advice: linear warmup 12 steps, peak LR 1.13 (eta_max there 1.6 [1.6, 1.6], "
                                "3 of 3 seeds); without warmup eta_max 0.4 [0.4, 0.4]")
    assert advice["thin"] is None and [f["warmup_steps"] for f in advice["frontier"]] == [0, 12]
    # a margin of 1 lets the edge itself be the pick; a huge margin leaves nothing: too thin, said so
    assert advise_from(probes({0: edge0, 12: edge12}), Plan([0, 1, 2], [0, 12]), "learned_0.9", 1.0, "linear",
                       120)["pick"]["lr"] == pytest.approx(edge12)
    none = advise_from(probes({0: edge0, 12: edge12}), Plan([0, 1, 2], [0, 12]), "learned_0.9", 100.0, "linear", 120)
    assert none["pick"] is None and none["answer"].startswith("advice: none, the evidence is too thin (no LR stable")


def test_warmup_and_lr_are_picked_together_by_the_lowest_median_final_loss():
    # a U-shaped loss in LR, lowest at 0.2; 12 warmup steps lower it by 0.05 at every LR; both edges far above
    def u_shaped(w, lr, seed):
        return (math.log(lr / 0.2)) ** 2 + 0.2 + 0.01 * seed - (0.05 if w else 0.0)

    advice = advise_from(probes({0: GRID[8], 12: GRID[8]}, loss=u_shaped), Plan([0, 1, 2], [0, 12]), "learned_0.9",
                         2 ** 0.5, "linear", 120)
    assert advice["pick"]["warmup_steps"] == 12 and advice["pick"]["lr"] == pytest.approx(0.2)
    assert advice["pick"]["median_train_loss"] == pytest.approx(0.16)
    # warmup worse on one seed but lower in the median: the median decides (warmup costs no compute)
    def mixed(w, lr, seed):
        return u_shaped(w, lr, seed) + (0.2 if w and seed == 2 else 0.0)

    advice = advise_from(probes({0: GRID[8], 12: GRID[8]}, loss=mixed), Plan([0, 1, 2], [0, 12]), "learned_0.9",
                         2 ** 0.5, "linear", 120)
    assert advice["pick"]["warmup_steps"] == 12 and advice["pick"]["lr"] == pytest.approx(0.2)
    # every cell keeps each seed's final train loss and stability, so the pick can be checked seed by seed
    cell = next(c for c in advice["cells"] if c["warmup_steps"] == 12 and c["lr"] == pytest.approx(0.2))
    assert cell["train_loss_by_seed"] == pytest.approx({"0": 0.15, "1": 0.16, "2": 0.37})
    assert cell["stable_by_seed"] == {"0": True, "1": True, "2": True}
    json.dumps([c["train_loss_by_seed"] for c in advice["cells"]], allow_nan=False)  # an unstable seed is null
    # the same loss with and without warmup: the tie goes to the shorter warmup
    advice = advise_from(probes({0: GRID[8], 12: GRID[8]}, loss=lambda w, lr, seed: u_shaped(0, lr, seed)),
                         Plan([0, 1, 2], [0, 12]), "learned_0.9", 2 ** 0.5, "linear", 120)
    assert advice["pick"]["warmup_steps"] == 0 and advice["pick"]["lr"] == pytest.approx(0.2)


def test_a_cell_counts_only_below_its_own_warmups_edge_with_the_margin():
    # the loss is lowest at 0.8, stable at 0.8 on every seed without warmup too, but without warmup eta_max is 0.8:
    # no margin there; with 12 steps eta_max is 1.6 and 0.8 x 2^0.5 <= 1.6
    def best_at_08(w, lr, seed):
        return (math.log(lr / 0.8)) ** 2 + 0.1 + 0.01 * seed

    advice = advise_from(probes({0: GRID[6], 12: GRID[8]}, loss=best_at_08), Plan([0, 1, 2], [0, 12]),
                         "learned_0.9", 2 ** 0.5, "linear", 120)
    assert advice["pick"]["warmup_steps"] == 12 and advice["pick"]["lr"] == pytest.approx(0.8)
    assert all(c["lr"] * 2 ** 0.5 <= 0.8 + 1e-9 for c in advice["candidates"] if c["warmup_steps"] == 0)


def test_no_warmup_when_it_already_has_the_margin():
    advice = advise_from(probes({0: GRID[8], 4: GRID[8]}), Plan([0, 1, 2], [0, 4]), "learned_0.9", 2 ** 0.5,
                         "linear", 40)
    assert advice["pick"]["warmup_steps"] == 0 and advice["answer"].startswith("advice: no warmup, peak LR 1.13")
    assert any("not resolved" in n for n in advice["notes"])  # identical intervals: warmup's effect unresolved


def test_too_thin_when_every_seed_is_censored_or_a_single_seed_or_nothing_ran():
    nothing = advise_from(probes({0: 0.4}).iloc[:0], Plan([0, 1, 2], [0]), "learned_0.9", 2 ** 0.5, "linear", 120)
    assert nothing["answer"] == "advice: none, the evidence is too thin (no probe finished within the budget)"
    below = advise_from(probes({0: 0.01, 12: 0.01}), Plan([0, 1, 2], [0, 12]), "learned_0.9", 2 ** 0.5, "linear", 120)
    assert below["pick"] is None and "every seed is censored below" in below["answer"]
    above = advise_from(probes({0: 10.0, 12: 10.0}), Plan([0, 1, 2], [0, 12]), "learned_0.9", 2 ** 0.5, "linear", 120)
    assert above["pick"] is None and "every seed is censored" in above["answer"]
    one = advise_from(probes({0: GRID[4], 12: GRID[8]}, seeds=(0,)), Plan([0], [0, 12]), "learned_0.9", 2 ** 0.5,
                      "linear", 120)
    assert one["pick"] is None and "1 seed" in one["answer"]
    # each too-thin answer says what to try next, from where the probes ended
    assert nothing["next"].startswith("raise --budget")
    assert below["next"].startswith(f"nothing was stable down to LR {GRID[0]:.3g}, the lowest probed: raise --budget")
    assert f"--no-range-test optimizer.lr={GRID[0] / 4:.3g}" in below["next"] and "learning bar" not in below["next"]
    assert above["next"].startswith("raise --budget") and one["next"].startswith("run 2 or more seeds")


def test_a_run_that_trained_but_missed_the_learning_bar_below_the_passing_lrs_is_named_in_the_next_step():
    # learned_0.9's bar (0.9 x 2.3) is missed by LRs too low to learn in T steps, not only by unstable ones
    slow = advise_from(probes({0: 10.0, 12: 10.0}, loss=lambda w, lr, seed: 2.2 if lr < 0.3 else 1.0),
                       Plan([0, 1, 2], [0, 12]), "learned_0.9", 2 ** 0.5, "linear", 120)
    assert slow["pick"] is None and slow["next"].startswith("raise --budget")
    assert f"runs at LR {GRID[3]:.3g} did not diverge but stayed above the criterion's learning bar" in slow["next"]
    lines = answer_lines(slow)
    assert lines[0] == slow["answer"] and lines[1] == f"next: {slow['next']}"


def test_budget_text_and_plan_fit_the_budget():
    assert advise.parse_budget("60runs") == (60, None) and advise.parse_budget("900core-s") == (None, 900.0)
    for bad in ("60", "lots", "-5runs"):
        with pytest.raises(ConfigError, match="--budget"):
            advise.parse_budget(bad)
    assert advise.default_warmups(120) == [0, 4, 8, 12] and advise.default_warmups(5) == [0]
    small = advise.plan(120, 24, None, None, 0)
    assert small.seeds == [0, 1, 2] and small.warmups == [0, 12]  # intermediate lengths dropped first
    big = advise.plan(120, 500, None, None, 100)
    assert big.seeds == [100, 101, 102, 103, 104] and big.warmups == [0, 4, 8, 12]


def test_a_budget_in_core_seconds_sets_the_plan_through_the_range_tests_cost_per_step():
    ramp = {"core_s": 2.0, "stopped_at": 100}  # 0.02 core-s a step: a run of T = 120 steps costs 2.4
    assert advise.runs_in(50.0, ramp, 120) == 1 + 20  # the range test, then (50 - 2) // 2.4 = 20 runs
    assert advise.runs_in(1.0, ramp, 120) == 1 and advise.runs_in(None, ramp, 120) is None
    assert advise.runs_in(50.0, None, 120) is None and advise.runs_in(50.0, {"core_s": 0.0, "stopped_at": 100}, 120) is None
    assert advise.plan(120, advise.runs_in(50.0, ramp, 120), None, None, 0).seeds == [0, 1, 2]  # not 5 seeds


def _advise(tmp_path: Path, *extra: str):
    return run_cli("warmup_lab.advise", ["task=modadd", "train.steps=12", "train.batch_size=16", "train.eval_every=0",
                                         "train.checkpoint_every=0", f"runs_root={tmp_path / 'runs'}", *extra],
                   cwd=tmp_path, timeout=900)


@pytest.mark.slow
def test_advise_on_a_tiny_budget_answers_first_respects_the_budget_and_logs_a_wandb_table(tmp_path):
    proc = _advise(tmp_path, "logger=wandb", "--budget", "14runs", "--seeds", "2", "--warmups", "0,2",
                   "--out", str(tmp_path / "advice"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("advice: ")
    nxt = 2 if lines[1].startswith("next: ") else 1  # a too-thin answer's next step comes before the criterion
    assert lines[nxt].startswith("criterion (fixed before any run): learned_0.9")
    # the criterion is printed before the first probe runs
    err = proc.stderr
    assert err.index("criterion (fixed before any run)") < err.index("[max_stable_lr] round 1")
    advice = json.loads((tmp_path / "advice" / "advice.json").read_text())
    assert advice["answer"] == lines[0] and advice["criterion"] == "learned_0.9"
    assert advice["spent"]["probes"] <= 14 and advice["spent"]["max_probes"] == 14 and advice["spent"]["core_s"] > 0
    assert any(line.startswith(f"spent: {advice['spent']['probes']} runs of 14") for line in lines)
    assert (tmp_path / "advice" / "advice.png").stat().st_size > 10_000
    # every probe is a normal run with a summary, tagged as a probe of this advice
    run_dirs = [d for d in (tmp_path / "runs").iterdir() if (d / runs.SUMMARY_FILE).exists()]
    assert len(run_dirs) == advice["spent"]["probes"]
    # the frontier as a W&B table, in the offline run's files
    tables = list((tmp_path / "advice").glob("wandb/offline-run-*/files/media/table/advice_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert "warmup_steps" in table["columns"] and len(table["data"]) == len(advice["frontier"]) == 2


@pytest.mark.slow
def test_advise_says_too_thin_when_every_seed_is_censored(tmp_path):
    # no run of 12 steps gets its training loss to 1% of l0: every probe is unstable, every seed censored below
    proc = _advise(tmp_path, "logger=none", "--criterion", "loss_frac_0.01", "--budget", "16runs", "--seeds", "2",
                   "--warmups", "0,2", "--out", str(tmp_path / "advice"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = proc.stdout.splitlines()[:2]
    assert first.startswith("advice: none, the evidence is too thin (every seed is censored below")
    assert second.startswith("next: nothing was stable down to LR")
    advice = json.loads((tmp_path / "advice" / "advice.json").read_text())
    assert advice["pick"] is None
    # with nothing stable the descent has no start: the search gets the runs it held, until a round of
    # 2 seeds x 2 warmups no longer fits (before, 7 of the 16 were left unspent)
    assert 16 - 4 < advice["spent"]["probes"] <= 16 and advice["spent"]["confirmation_runs"] == 0


def test_an_unknown_option_is_one_line_not_a_hydra_override():
    with pytest.raises(ConfigError, match="option='--budgt'.*--help"):
        advise.parse(["--budgt", "3runs", "task=digits"])
    args, overrides = advise.parse(["--budget", "3runs", "task=digits", "+model.dim=8"])
    assert args.budget == "3runs" and overrides == ["task=digits", "+model.dim=8"]


def _cells(rows: list[tuple[int, float, int, float | None]]) -> pd.DataFrame:
    """(warmup, lr, seeds run, median loss or None = unstable on a seed) -> advise.descent's cell table."""
    return pd.DataFrame([{"warmup_steps": w, "lr": lr, "n": n, "median_train_loss": loss if loss is not None else 9.0,
                          "every_seed_stable": loss is not None and n == 3} for w, lr, n, loss in rows],
                        columns=["warmup_steps", "lr", "n", "median_train_loss", "every_seed_stable"])


def test_descent_runs_each_warmups_rungs_below_its_margin_lr_while_the_loss_falls():
    summary = pd.DataFrame([{"warmup_steps": 0, "ci_low": 0.4, "ci_low_censored": ""},
                            {"warmup_steps": 4, "ci_low": 0.9, "ci_low_censored": "below"},  # an upper bound: unusable
                            {"warmup_steps": 12, "ci_low": 0.8, "ci_low_censored": ""}])

    def g(k):  # the grid 0.4 x 2^(k/2)
        return 0.4 * 2 ** (k / 2)

    def nxt(rows):
        return [(w, round(lr, 4)) for w, lr in advise.descent(_cells(rows), summary, 3, 2 ** 0.5, 0.4, 2 ** 0.5)]

    # the first rung of each usable warmup, longest first: the largest grid LR <= low end / margin
    assert nxt([]) == [(12, 0.5657), (0, 0.2828)]
    # a rung measured on 2 of 3 seeds is run again (its missing seed); one on every seed moves down x margin^2
    assert nxt([(12, g(1), 2, None)]) == [(12, 0.5657), (0, 0.2828)]
    assert nxt([(12, g(1), 3, 1.0)]) == [(12, 0.2828), (0, 0.2828)]
    assert nxt([(12, g(1), 3, 1.0), (12, g(-1), 3, 0.8)]) == [(12, 0.1414), (0, 0.2828)]
    # the loss rose at 0.1414: warmup 12's descent has ended; rungs unstable on a seed are passed over (go on)
    done12 = [(12, g(1), 3, 1.0), (12, g(-1), 3, 0.8), (12, g(-3), 3, 0.85)]
    assert nxt(done12) == [(0, 0.2828)]
    assert nxt([*done12, (0, g(-1), 3, None)]) == [(0, 0.1414)]
    assert nxt([(12, g(1), 3, None), (12, g(-1), 3, None), *done12[2:]]) == [(12, 0.0707), (0, 0.2828)]
    assert nxt([*done12, (0, g(-1), 3, 0.5), (0, g(-3), 3, 0.5)]) == []  # equal is not lower: ended
    # at most MAX_RUNGS rungs, however long the loss keeps falling
    falling_ = [(12, g(1 - 2 * r), 3, 1.0 - 0.1 * r) for r in range(advise.MAX_RUNGS)]
    assert nxt([*falling_, (0, g(-1), 3, 0.5), (0, g(-3), 3, 0.6)]) == []


def test_the_search_starts_on_the_users_grid_just_below_where_the_range_test_blew_up():
    from warmup_lab.lr_find import analyse

    lrs = [1e-4 * 1.2 ** t for t in range(60)]  # up to ~5.6
    losses = [2.0 - 0.02 * t if lr < 1.0 else 2.0 + 50.0 * (t - 40) for t, lr in enumerate(lrs)]  # blows up past LR 1
    found = analyse(lrs, losses, n_steps=60)
    edge = advise._edge(found)
    assert 1.0 <= edge <= 1.2 ** 2 and edge == found["lrs"][-1]
    ramp = {"edge_lr": edge}
    start = advise.start_from_range_test(ramp, 0.4, 2 ** 0.5)
    assert start <= edge < start * 2 ** 0.5 and math.log(start / 0.4, 2 ** 0.5) == pytest.approx(round(math.log(start / 0.4, 2 ** 0.5)))
    assert advise.start_from_range_test({"edge_lr": 0.05}, 0.4, 2 ** 0.5) == pytest.approx(0.05)  # on the grid: kept
    assert advise.start_from_range_test({"edge_lr": 1e3}, 0.4, 2 ** 0.5) == 10.0  # the search's MAX_LR
    # a ramp that never blew up: its top
    assert advise._edge({"lrs": [], "max_lr": 1.0}) == 1.0
    assert advise.sets_ramp("schedule.warmup_steps") and advise.sets_ramp("optimizer.lr") and not advise.sets_ramp("seed")


def test_the_advice_figure_puts_the_star_on_the_pick_with_a_legend_entry_and_the_seeds_apart(tmp_path):
    from warmup_lab.advice import figure

    edge0, edge12 = GRID[4], GRID[8]
    advice = advise_from(probes({0: edge0, 12: edge12}), Plan([0, 1, 2], [0, 12]), "learned_0.9", 2 ** 0.5,
                         "linear", 120)
    advice = json.loads(json.dumps(advice, default=str))  # as advice.json holds it: the figure redraws from that
    fig = figure(advice, tmp_path / "advice.png")
    assert (tmp_path / "advice.png").stat().st_size > 10_000
    ax = fig.axes[0]
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert len(stars) == 1
    (x,), (y,) = stars[0].get_xdata(), stars[0].get_ydata()
    ticks = dict(zip((t.get_text() for t in ax.get_xticklabels()), ax.get_xticks()))
    assert x == ticks[str(advice["pick"]["warmup_steps"])] and y == advice["pick"]["lr"]
    labels = ax.get_legend_handles_labels()[1]
    assert any(lab.startswith(f"recommended: warmup {advice['pick']['warmup_steps']} steps") for lab in labels)
    # every seed's eta_max in its own column: no two points of one warmup length share an x
    dots = [ln for ln in ax.get_lines() if ln.get_marker() in ("o", "^", "v") and len(ln.get_xdata())]
    xs = [float(ln.get_xdata()[0]) for ln in dots]
    assert len(dots) == 6 and len(set(xs)) == 6
    # the whole title and the legend lie inside the saved figure; the star inside the axes' limits
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the closed figure, laid out as it was saved
    box = fig.bbox
    for artist in (ax.title, ax.get_legend()):
        ext = artist.get_window_extent(renderer)
        assert box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0 and ext.y1 <= box.y1, artist
    lo, hi = ax.get_ylim()
    assert lo < y < hi
