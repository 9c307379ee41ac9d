"""The thresholds chosen on validation keep their promises on the data they were chosen on."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training.evaluate import (
    ThresholdWarning,
    bagged_precision_threshold,
    choose_fallback_threshold,
    choose_precision_threshold,
    expected_calibration_error,
)


def test_precision_threshold_is_the_lowest_that_reaches_the_target() -> None:
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    threshold, at = choose_precision_threshold(y, scores, 0.9)
    assert threshold == pytest.approx(0.5)  # from 0.5 up every message is positive; 0.4 lets a negative in
    assert at == {"precision": 1.0, "recall": pytest.approx(4 / 5)}  # the positive at 0.3 is missed
    assert (y[scores >= threshold] == 1).mean() >= 0.9


def test_precision_threshold_warns_and_takes_the_most_precise_when_out_of_reach() -> None:
    y = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.2])
    with pytest.warns(ThresholdWarning, match="never reaches"):
        threshold, at = choose_precision_threshold(y, scores, 1.01)
    assert threshold == pytest.approx(0.9) and at["precision"] == 1.0


def test_precision_threshold_without_positives_stays_at_half() -> None:
    with pytest.warns(ThresholdWarning, match="no positive"):
        threshold, _ = choose_precision_threshold(np.zeros(5, dtype=int), np.linspace(0, 1, 5), 0.9)
    assert threshold == 0.5


def _jagged_calibration_set(rng: np.random.Generator, n: int = 1600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A few hundred positives among overlapping scores, four writers: the precision curve crosses 0.9 more than once."""
    y = (rng.random(n) < 0.13).astype(int)
    scores = np.clip(np.where(y == 1, rng.normal(0.62, 0.2, n), rng.normal(0.25, 0.15, n)), 0, 1)
    return y, scores, np.repeat(["k01", "k02", "k03", "k04"], n // 4)


def test_bagged_precision_threshold_is_steadier_than_the_single_choice_and_keeps_the_target() -> None:
    """ROUND26_RULES.md, AS: over resamples of one set the bagged choice moves less than the lowest threshold reaching
    the target, and on the whole set it still holds the target within sampling noise."""
    rng = np.random.default_rng(3)
    y, scores, writers = _jagged_calibration_set(rng)
    single, bagged = [], []
    for _ in range(30):
        rows = rng.integers(0, len(y), len(y))
        single.append(choose_precision_threshold(y[rows], scores[rows], 0.9)[0])
        bagged.append(bagged_precision_threshold(y[rows], scores[rows], 0.9, 50, 13, writers[rows])[0])
    assert np.std(bagged) < np.std(single)
    threshold, at = bagged_precision_threshold(y, scores, 0.9, 100, 13, writers)
    assert at["precision"] == pytest.approx((y[scores >= threshold] == 1).mean())
    assert at["precision"] > 0.85 and at["bootstrap_sd"] > 0
    assert bagged_precision_threshold(y, scores, 0.9, 100, 13, writers) == (threshold, at)  # seeded: the same choice


def test_bagged_precision_threshold_without_draws_is_the_single_choice_and_warns_once_when_out_of_reach() -> None:
    rng = np.random.default_rng(5)
    y, scores, writers = _jagged_calibration_set(rng, 400)
    assert bagged_precision_threshold(y, scores, 0.9, 0, 13, writers) == choose_precision_threshold(y, scores, 0.9)
    with pytest.warns(ThresholdWarning, match="20 of 20 resamples never reach") as caught:
        threshold, _ = bagged_precision_threshold(y, scores, 1.01, 20, 13, writers)
    assert len(caught) == 1 and threshold <= scores.max()


def test_fallback_threshold_reaches_accepted_accuracy_with_fewest_handovers() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 400)
    correct = rng.uniform(0, 1, 400) < confidence  # confident predictions are right more often
    y = np.array(["a"] * 400)
    predicted = np.where(correct, "a", "b")
    threshold = choose_fallback_threshold(y, predicted, confidence, "accepted_accuracy", 0.85)
    accepted = confidence >= threshold
    assert correct[accepted].mean() >= 0.85
    lower = confidence[confidence < threshold]
    if lower.size:  # the next lower candidate misses the target
        assert correct[confidence >= lower.max()].mean() < 0.85


def test_fallback_threshold_warns_when_accuracy_is_out_of_reach() -> None:
    y = np.array(["a", "b"] * 50)
    predicted = np.array(["b", "a"] * 50)
    with pytest.warns(ThresholdWarning, match="never reaches"):
        threshold = choose_fallback_threshold(y, predicted, np.linspace(0.1, 0.9, 100), "accepted_accuracy", 0.9)
    assert 0.0 <= threshold <= 0.9


def test_fallback_threshold_for_out_of_scope_recall() -> None:
    y = np.array(["oos"] * 4 + ["a"] * 4)
    predicted = np.array(["oos", "a", "a", "a", "a", "a", "a", "a"])
    confidence = np.array([0.9, 0.2, 0.4, 0.8, 0.9, 0.9, 0.9, 0.9])
    threshold = choose_fallback_threshold(y, predicted, confidence, "oos_recall", 0.75, oos_label="oos")
    caught = (predicted[:4] == "oos") | (confidence[:4] < threshold)
    assert caught.mean() >= 0.75 and threshold == pytest.approx(0.8)


def test_calibration_error_is_zero_when_confidence_matches_accuracy_and_grows_with_overconfidence() -> None:
    correct = np.array([1] * 7 + [0] * 3, dtype=float)
    assert expected_calibration_error(correct, np.full(10, 0.7)) == pytest.approx(0.0)
    assert expected_calibration_error(correct, np.full(10, 0.99)) == pytest.approx(0.29)
    assert expected_calibration_error(correct, np.full(10, 0.99)) > expected_calibration_error(correct, np.full(10, 0.8))
