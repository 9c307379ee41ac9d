"""`pipeline.training.shift`: the label-free calibration of `train --calibration-chats` (ATC)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.drift import atc_accuracy, atc_threshold
from pipeline.training.shift import fallback_for_expected_accuracy, mean_confidence, temperature_for_mean_confidence


def test_atc_threshold_leaves_the_validation_accuracy_above_it():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 1000)
    correct = rng.uniform(size=1000) < confidence  # calibrated on validation
    threshold = atc_threshold(confidence, correct)
    assert atc_accuracy(confidence, threshold) == pytest.approx(correct.mean(), abs=0.002)
    # messages the model is less sure of get a lower estimate, more sure a higher one
    assert atc_accuracy(confidence * 0.8, threshold) < correct.mean() < atc_accuracy(np.minimum(confidence * 1.2, 1), threshold)
    with pytest.raises(ValueError):
        atc_threshold(np.array([]), np.array([], dtype=bool))


def test_the_temperature_reaches_the_target_mean_confidence():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(300, 5)) * 3
    for target in (0.3, 0.5, 0.75, 0.95):
        temperature = temperature_for_mean_confidence(scores, target)
        assert mean_confidence(scores, temperature) == pytest.approx(target, abs=1e-8)
    # a colder target needs a hotter temperature: the mean top probability falls as the temperature grows
    assert temperature_for_mean_confidence(scores, 0.5) > temperature_for_mean_confidence(scores, 0.8)
    # below 1/classes cannot be reached: the largest temperature searched
    assert temperature_for_mean_confidence(scores, 0.1) == pytest.approx(np.exp(7.0))
    with pytest.raises(ValueError):
        temperature_for_mean_confidence(np.zeros((3, 1)), 0.5)


def test_fallback_threshold_is_the_lowest_that_reaches_the_expected_accuracy():
    confidence = np.array([0.3, 0.5, 0.6, 0.9, 0.95, 1.0])
    threshold, expected = fallback_for_expected_accuracy(confidence, 0.9)
    assert threshold == 0.9 and expected == pytest.approx((0.9 + 0.95 + 1.0) / 3)
    # a lower one would not: with 0.6 accepted too the mean is below the target
    assert np.mean(confidence[confidence >= 0.6]) < 0.9
    assert fallback_for_expected_accuracy(confidence, 0.5) == (0.0, pytest.approx(confidence.mean()))
    # never fewer than min_accepted of the messages: the best reachable instead
    low = np.full(100, 0.5)
    low[-1] = 0.99
    threshold, expected = fallback_for_expected_accuracy(low, 0.95, min_accepted=0.05)
    assert (low >= threshold).mean() >= 0.05 and expected < 0.95
