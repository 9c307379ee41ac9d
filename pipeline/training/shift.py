"""Calibration for a shop's chats from its unlabelled messages (`train --calibration-chats`).

The intent model's temperature is fitted on the held-out writers of the authored corpus, where it is right
about 9 times in 10; on real chats it is right about 2 times in 3, so it is over-confident there. Without
labels, Average Thresholded Confidence (ATC, `pipeline.drift`; Garg et al., "Leveraging unlabeled data to predict
out-of-distribution performance", ICLR 2022) estimates the accuracy on the shop's messages: the confidence
threshold above which the validation share of messages equals the validation accuracy, applied to the
shop's messages. The temperature is then the one at which the mean confidence on the shop's messages equals
that estimate, and the fallback threshold the lowest at which the mean (now calibrated) confidence of the
accepted messages reaches the accepted-accuracy target. Pure functions of scores; the caller applies them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import softmax

# Temperatures searched (log scale): far wider than any fitted one (0.2-0.3 for the default model).
LOG_T_BOUNDS = (-7.0, 7.0)


def mean_confidence(scores: np.ndarray, temperature: float) -> float:
    return float(softmax(np.asarray(scores, dtype=float) / temperature, axis=1).max(axis=1).mean())


def temperature_for_mean_confidence(scores: np.ndarray, target: float) -> float:
    """The softmax temperature at which the mean top probability over `scores` (n, classes) is `target`.

    The mean top probability falls from (at most) 1 towards 1/classes as the temperature grows, so the root
    is unique; a target outside what the bounds reach is clipped to the nearest bound."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] < 2 or not len(scores):
        raise ValueError("scores must be (n >= 1, classes >= 2)")

    def gap(log_t: float) -> float:
        return mean_confidence(scores, math.exp(log_t)) - target

    low, high = LOG_T_BOUNDS
    if gap(low) <= 0:
        return math.exp(low)
    if gap(high) >= 0:
        return math.exp(high)
    return math.exp(brentq(gap, low, high, xtol=1e-10))


def fallback_for_expected_accuracy(confidence: np.ndarray, target: float, min_accepted: float = 0.05) -> tuple[float, float]:
    """(threshold, expected accepted accuracy): the lowest confidence threshold at which the mean calibrated
    confidence of the accepted messages reaches `target`; when none does while at least `min_accepted` of the
    messages are accepted, the threshold with the highest expected accuracy among those."""
    ordered = np.sort(np.asarray(confidence, dtype=float))
    if not len(ordered):
        raise ValueError("no message to choose the fallback threshold on")
    # mean confidence of the messages at or above each position
    expected = np.cumsum(ordered[::-1])[::-1] / np.arange(len(ordered), 0, -1)
    allowed = np.arange(len(ordered)) <= len(ordered) - max(1, math.ceil(min_accepted * len(ordered)))
    reach = np.flatnonzero((expected >= target) & allowed)
    if reach.size:
        position = int(reach[0])
    else:
        position = int(np.flatnonzero(allowed)[np.argmax(expected[allowed])])
    return (0.0 if position == 0 else float(ordered[position])), float(expected[position])
