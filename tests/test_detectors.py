"""Spike, divergence and catapult detectors on crafted loss sequences (DESIGN.md section 2)."""

import math

import pytest

from warmup_lab.errors import ConfigError
from warmup_lab.metrics import (
    CatapultDetector,
    DivergenceDetector,
    Monitor,
    SpikeDetector,
    failed_to_train,
    lr_sensitivity,
)

DETECT = {
    "spike": {"ratio": 2.0, "window": 5, "burn_in": 3},
    "divergence": {"factor": 10.0, "patience": 3, "ceiling": None},
    "catapult": {"rise": 2.0, "recover": 1.2},
}


def test_spike_is_a_loss_above_ratio_times_the_median_of_the_window():
    det = SpikeDetector(ratio=2.0, window=5, burn_in=3)
    losses = [1.0, 1.0, 1.0, 1.0, 1.0, 2.5, 1.0, 1.9, 1.0]
    flags = [det.update(t, x) for t, x in enumerate(losses)]
    assert flags == [False] * 5 + [True, False, False, False]
    assert det.events == [{"step": 5, "loss": 2.5, "ratio": 2.5}]
    assert det.stats() == {"spike_count": 1, "max_spike_ratio": 2.5, "first_spike_step": 5}


def test_no_spike_during_burn_in_and_non_finite_losses_are_not_in_the_window():
    det = SpikeDetector(ratio=2.0, window=3, burn_in=4)
    assert not any(det.update(t, x) for t, x in enumerate([1.0, 5.0, 1.0, 9.0]))
    det.update(4, float("nan"))
    assert all(math.isfinite(x) for x in det.history)
    assert det.update(5, 30.0)  # median of (5, 1, 9) = 5 -> 30 > 10


def test_divergence_on_non_finite_loss_is_immediate():
    det = DivergenceDetector(factor=10, patience=3)
    assert not det.update(0, 2.0)
    assert det.update(1, float("inf"))
    assert det.diverged_step == 1


def test_divergence_needs_patience_consecutive_steps_above_factor_l0():
    det = DivergenceDetector(factor=10, patience=3)
    seq = [2.0, 25.0, 25.0, 3.0, 21.0, 30.0, 40.0, 1.0]
    out = [det.update(t, x) for t, x in enumerate(seq)]
    assert out == [False, False, False, False, False, False, True, True]
    assert det.diverged_step == 6


def test_divergence_ceiling_replaces_factor():
    det = DivergenceDetector(factor=10, patience=1, ceiling=5.0)
    assert not det.update(0, 1.0)
    assert det.update(1, 6.0)


def test_catapult_rise_and_recovery_is_recorded_with_peak_and_duration():
    det = CatapultDetector(rise=2.0, recover=1.2, smooth=3)
    seq = [4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 3.0, 5.0, 6.0, 4.0, 1.1, 1.0, 1.0, 1.0]
    for t, x in enumerate(seq):
        det.update(t, x)
    stats = det.stats()
    assert stats["catapult_count"] == 1
    event = stats["catapults"][0]
    assert event["peak"] == 6.0 and event["peak_step"] == 8
    assert event["start"] == 7 and event["end"] == 11 and event["duration"] == 4
    assert event["peak_ratio"] == pytest.approx(6.0)


def test_a_single_spike_is_not_a_catapult():
    det = CatapultDetector(rise=2.0, recover=1.2, smooth=5)
    for t, x in enumerate([2.0, 1.5, 1.0, 1.0, 1.0, 1.0, 9.0, 1.0, 1.0, 1.0]):
        det.update(t, x)
    assert det.stats()["catapult_count"] == 0


def test_an_unrecovered_rise_is_not_a_catapult():
    det = CatapultDetector(rise=2.0, recover=1.2, smooth=3)
    for t, x in enumerate([2.0, 1.0, 1.0, 1.0, 5.0, 6.0, 7.0, 8.0]):
        det.update(t, x)
    assert det.stats()["catapult_count"] == 0 and det.open_event is not None


def test_monitor_state_round_trip_detects_the_same_as_an_uninterrupted_run():
    seq = [2.0, 1.8, 1.5, 1.4, 4.0, 1.3, 1.2, 3.5, 3.9, 4.2, 1.2, 1.1, 1.0, 30.0, 30.0, 30.0]
    whole = Monitor(DETECT)
    for t, x in enumerate(seq):
        whole.update(t, x)
    first = Monitor(DETECT)
    for t, x in enumerate(seq[:7]):
        first.update(t, x)
    second = Monitor(DETECT)
    second.load_state_dict(first.state_dict())
    for t, x in enumerate(seq[7:], start=7):
        second.update(t, x)
    assert second.stats() == whole.stats()
    assert whole.stats()["diverged_step"] == 15


def test_monitor_rejects_bad_thresholds_naming_the_field():
    bad = {**DETECT, "spike": {"ratio": 0.5, "window": 5, "burn_in": 3}}
    with pytest.raises(ConfigError, match=r"detect\.spike\.ratio=0\.5"):
        Monitor(bad)


def test_failed_to_train_by_loss_or_by_chance_accuracy():
    margins = {"acc_margin": 0.02, "loss_margin": 0.0}
    assert failed_to_train(2.31, 2.30, 0.5, 0.1, margins)           # loss not below l0
    assert failed_to_train(1.50, 2.30, 0.11, 0.1, margins)          # accuracy at chance
    assert not failed_to_train(1.50, 2.30, 0.40, 0.1, margins)
    assert not failed_to_train(1.50, 2.30, None, None, margins)     # LM: loss only
    bar = {**margins, "min_acc": 0.5}
    assert failed_to_train(1.50, 2.30, 0.28, 0.1, bar)              # beat chance, still below the bar
    assert not failed_to_train(1.50, 2.30, 0.60, 0.1, bar)


def test_lr_sensitivity_matches_its_definition():
    lrs, init = [1e-3, 1e-2, 1e-1, 1.0], [2.3] * 4
    final = [1.0, 0.5, 3.0, float("nan")]
    # mean(min(final, init)) - best final = mean(1.0, 0.5, 2.3, 2.3) - 0.5
    assert lr_sensitivity(lrs, final, init) == pytest.approx((1.0 + 0.5 + 2.3 + 2.3) / 4 - 0.5)


def test_lr_sensitivity_is_zero_not_negative_when_no_lr_trains():
    assert lr_sensitivity([1e-3, 1e-2], [2.4, 2.5], [2.3, 2.3]) == pytest.approx(0.0)
