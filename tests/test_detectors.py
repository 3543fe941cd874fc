"""Spike, divergence and catapult detectors on crafted loss sequences (docs/definitions.md)."""

import math

import pytest
from omegaconf import OmegaConf

from warmup_lab.errors import ConfigError
from warmup_lab.detectors import (
    CatapultDetector,
    DivergenceDetector,
    Monitor,
    SpikeDetector,
    failed_to_train,
)
from warmup_lab.paths import CONF_DIR

# The detectors' settings have one home, conf/train.yaml: the tests start from it.
CONFIGURED = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml").detect)
DETECT = {**CONFIGURED, "spike": {**CONFIGURED["spike"], "window": 5}}


def spikes(losses, **kw):
    det = SpikeDetector(**{**CONFIGURED["spike"], **kw})
    flags = [det.update(t, x) for t, x in enumerate(losses)]
    return det, flags


def test_a_step_1_excursion_is_a_spike_event_watched_against_l0():
    # digits without warmup at a large LR: 2.8 -> 28 at step 1, long before any window could fill
    det, flags = spikes([2.8, 28.0, 2.5, 2.4], ratio=2.0, window=20)
    assert flags == [False, True, False, False]
    assert det.events == [{"start": 1, "length": 1, "peak_step": 1, "peak_loss": 28.0, "peak_ratio": 10.0}]
    assert det.stats() == {"spike_events": 1, "spike_steps": 1, "max_spike_ratio": 10.0, "first_spike_step": 1}


def test_a_10_step_excursion_is_one_event_with_its_peak_and_length():
    losses = [1.0] * 6 + [5.0, 6.0, 9.0, 7.0, 6.0, 5.0, 5.0, 4.0, 3.0, 2.5] + [1.0] * 5
    det, flags = spikes(losses, ratio=2.0, window=5)
    assert flags == [False] * 6 + [True] * 10 + [False] * 5
    assert det.events == [{"start": 6, "length": 10, "peak_step": 8, "peak_loss": 9.0, "peak_ratio": 9.0}]
    assert det.stats()["spike_events"] == 1 and det.stats()["spike_steps"] == 10


def test_two_excursions_are_two_events_and_an_open_one_counts_at_the_end():
    det, _ = spikes([1.0] * 5 + [3.0, 1.0, 1.0, 4.0, 4.5], ratio=2.0, window=3)
    assert [e["start"] for e in det.all_events()] == [5, 8] and det.open_event is not None
    assert det.stats()["spike_events"] == 2 and det.stats()["max_spike_ratio"] == 4.5


def test_noise_floor_keeps_jitter_near_zero_loss_out():
    tail = [0.01, 0.012, 0.009, 0.011, 0.01, 0.03, 0.01, 0.05, 0.01]  # 3x-5x the median, far below 0.05 x l0
    _, flags = spikes([2.3, 1.0, 0.1] + tail, ratio=2.0, window=3, floor=0.05)
    assert not any(flags)
    _, flags = spikes([2.3, 1.0, 0.1] + tail, ratio=2.0, window=3, floor=0.0)
    assert any(flags)
    _, flags = spikes([2.3, 1.0, 0.1] + tail, ratio=2.0, window=3, floor=0.0, abs_floor=0.1)
    assert not any(flags)


def test_non_finite_losses_are_not_in_the_window():
    det, _ = spikes([1.0, 1.0, 1.0, float("nan"), 1.0], ratio=2.0, window=3)
    assert all(math.isfinite(x) for x in det.history) and not det.events


def test_divergence_on_non_finite_loss_is_immediate():
    det = DivergenceDetector(factor=10, patience=3, ceiling=None)
    assert not det.update(0, 2.0)
    assert det.update(1, float("inf"))
    assert det.diverged_step == 1


def test_divergence_needs_patience_consecutive_steps_above_factor_l0():
    det = DivergenceDetector(factor=10, patience=3, ceiling=None)
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
    bad = {**DETECT, "spike": {"ratio": 0.5, "window": 5}}
    with pytest.raises(ConfigError, match=r"detect\.spike\.ratio=0\.5"):
        Monitor(bad)
    with pytest.raises(ConfigError, match=r"detect\.spike\.burn_in=10 .*no longer exists"):
        Monitor({**DETECT, "spike": {"ratio": 2.0, "window": 5, "burn_in": 10}})


def test_held_out_accuracy_judges_only_where_a_preset_opts_in_with_a_reason():
    with pytest.raises(ConfigError, match=r"detect\.failed\.min_acc=0\.5 .*heldout"):
        Monitor({**DETECT, "failed": {"loss_margin": 0.0, "min_acc": 0.5}})
    with pytest.raises(ConfigError, match=r"detect\.failed\.heldout\.why"):
        Monitor({**DETECT, "failed": {"loss_margin": 0.0, "heldout": {"min_acc": 0.5, "why": ""}}})
    Monitor({**DETECT, "failed": {"loss_margin": 0.0, "heldout": {"min_acc": 0.5, "why": "near-perfect when tuned"}}})


def test_failed_to_train_is_the_plain_rule_on_training_loss():
    plain = {"loss_margin": 0.0, "heldout": None}
    assert failed_to_train(2.31, 2.30, 0.9, plain)                 # loss not below l0
    assert failed_to_train(float("nan"), 2.30, None, plain)        # no finite final loss
    assert not failed_to_train(1.50, 2.30, 0.11, plain)            # chance accuracy does not judge: loss fell
    assert failed_to_train(2.25, 2.30, 0.9, {**plain, "loss_margin": 0.1})  # a margin raises the bar on the loss
    opted = {"loss_margin": 0.0, "heldout": {"min_acc": 0.5, "why": "tuned runs reach 0.96"}}
    assert failed_to_train(1.50, 2.30, 0.28, opted)                # beat chance, below the preset's held-out bar
    assert not failed_to_train(1.50, 2.30, 0.60, opted)
    assert not failed_to_train(1.50, 2.30, None, opted)            # no held-out accuracy (LM): loss only
