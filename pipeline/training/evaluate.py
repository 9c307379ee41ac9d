"""Metrics and the validation-time choices (fallback and decision thresholds).

Pure functions over labels, predictions and probabilities, so the same code scores the test split,
any `--eval-data` set and a champion model.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from pipeline.text import TOKEN_CHARS, has_latin


class ThresholdWarning(UserWarning):
    """A validation target could not be met; the closest threshold was used instead."""


def choose_precision_threshold(y_true: np.ndarray, scores: np.ndarray, target_precision: float) -> tuple[float, dict[str, float]]:
    """The lowest threshold whose validation precision reaches the target (so recall is highest)."""
    y_true = np.asarray(y_true)
    if y_true.sum() == 0:
        warnings.warn("no positive examples in validation data; purchase threshold left at 0.5", ThresholdWarning, stacklevel=2)
        return 0.5, {"precision": float("nan"), "recall": float("nan")}
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
    precision, recall = precision[:-1], recall[:-1]
    ok = np.flatnonzero(precision >= target_precision)
    if ok.size:
        best = ok[np.argmax(recall[ok])]
    else:
        best = int(np.argmax(precision))
        warnings.warn(
            f"validation precision never reaches {target_precision:.2f}; using the most precise threshold "
            f"({precision[best]:.3f} precision)",
            ThresholdWarning,
            stacklevel=2,
        )
    return float(thresholds[best]), {"precision": float(precision[best]), "recall": float(recall[best])}


def bagged_precision_threshold(
    y_true: np.ndarray, scores: np.ndarray, target_precision: float, draws: int, seed: int, groups: np.ndarray | None = None
) -> tuple[float, dict[str, float]]:
    """The median of `choose_precision_threshold` over `draws` bootstrap resamples (rows drawn within each group, e.g.
    a writer, when given): the same target on the same set, with the choice bagged. Measured on k01-k04 it is as spread
    over resamples of the set as the single choice (ROUND26_RULES.md, AS: SD 0.085 both), so the default does not use
    it; the spread comes from the set's few hundred positives, not from how the threshold is picked."""
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=float)
    if y_true.sum() == 0 or draws < 1:
        return choose_precision_threshold(y_true, scores, target_precision)
    rng = np.random.default_rng(seed)
    members = [np.arange(len(y_true))] if groups is None else [np.flatnonzero(groups == g) for g in pd.unique(groups)]
    chosen = []
    with warnings.catch_warnings(record=True) as caught:  # a resample that misses the target: counted, warned once below
        warnings.simplefilter("always", ThresholdWarning)
        for _ in range(draws):
            rows = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
            chosen.append(choose_precision_threshold(y_true[rows], scores[rows], target_precision)[0])
    missed = sum(issubclass(w.category, ThresholdWarning) for w in caught)
    if missed:
        warnings.warn(f"{missed} of {draws} resamples never reach precision {target_precision:.2f}; their most precise "
                      "thresholds enter the median", ThresholdWarning, stacklevel=2)
    threshold = float(np.median(chosen))
    predicted = scores >= threshold
    positives = int(y_true.sum())
    reached = {"precision": float(y_true[predicted].mean()) if predicted.any() else float("nan"),
               "recall": float(y_true[predicted].sum() / positives),
               "bootstrap_sd": float(np.std(chosen, ddof=1)) if draws > 1 else 0.0}
    return threshold, reached


def choose_fallback_threshold(
    y_true: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    target: str,
    value: float,
    oos_label: str | None = None,
) -> float:
    """Confidence below which a prediction is handed to a human.

    accepted_accuracy: the lowest threshold at which the accepted predictions reach `value` accuracy
    (fewest hand-overs); oos_recall: the lowest threshold at which `value` of the out-of-scope
    messages are either predicted out-of-scope or handed over.
    """
    y_true, predicted, confidence = map(np.asarray, (y_true, predicted, confidence))
    candidates = np.unique(np.concatenate([[0.0], confidence]))
    if target == "oos_recall":
        is_oos = y_true == oos_label
        if not is_oos.any():
            warnings.warn(f"no {oos_label!r} examples in validation data; no fallback", ThresholdWarning, stacklevel=2)
            return 0.0
        caught_by_label = predicted[is_oos] == oos_label
        for threshold in candidates:
            recall = np.mean(caught_by_label | (confidence[is_oos] < threshold))
            if recall >= value:
                return float(threshold)
        return float(candidates[-1])
    correct = predicted == y_true
    best_threshold, best_accuracy = 0.0, -1.0
    for threshold in candidates:
        accepted = confidence >= threshold
        if accepted.sum() < max(10, 0.05 * len(confidence)):
            break
        accuracy = correct[accepted].mean()
        if accuracy >= value:
            return float(threshold)
        if accuracy > best_accuracy:
            best_threshold, best_accuracy = float(threshold), accuracy
    warnings.warn(
        f"accepted accuracy never reaches {value:.2f} on validation; fallback threshold {best_threshold:.3f} "
        f"gives {best_accuracy:.3f}",
        ThresholdWarning,
        stacklevel=2,
    )
    return best_threshold


CALIBRATION_BINS = 15


@dataclass(frozen=True)
class CalibrationBins:
    """Equal-width score bins: what the ECE and the report's reliability diagram are both made of."""

    edges: np.ndarray
    counts: np.ndarray
    observed: np.ndarray  # share of positives (or of correct predictions) per bin; nan when empty
    mean_score: np.ndarray  # nan when empty


def calibration_bins(outcome: np.ndarray, score: np.ndarray, bins: int = CALIBRATION_BINS) -> CalibrationBins:
    outcome = np.asarray(outcome, dtype=float)
    score = np.asarray(score, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(score, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    observed = np.full(bins, np.nan)
    mean_score = np.full(bins, np.nan)
    for b in np.flatnonzero(counts):
        observed[b] = outcome[index == b].mean()
        mean_score[b] = score[index == b].mean()
    return CalibrationBins(edges, counts, observed, mean_score)


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    table = calibration_bins(correct, confidence, bins)
    filled = table.counts > 0
    weights = table.counts[filled] / table.counts.sum()
    return float(np.sum(weights * np.abs(table.observed[filled] - table.mean_score[filled])))


def intent_metrics(y_true, predicted, confidence, fallback) -> dict[str, Any]:
    y_true = np.asarray(y_true, dtype=object).astype(str)
    predicted = np.asarray(predicted, dtype=object).astype(str)
    confidence = np.asarray(confidence, dtype=float)
    fallback = np.asarray(fallback, dtype=bool)
    labels = sorted(set(y_true) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, labels=labels, zero_division=0)
    accepted = ~fallback
    correct = predicted == y_true
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "macro_f1": float(f1_score(y_true, predicted, labels=sorted(set(y_true)), average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, predicted, average="weighted", zero_division=0)),
        "fallback_rate": float(fallback.mean()) if len(fallback) else 0.0,
        "accepted_accuracy": float(correct[accepted].mean()) if accepted.any() else float("nan"),
        "ece": expected_calibration_error(correct, confidence) if len(confidence) else float("nan"),
        "n": int(len(y_true)),
        "per_intent": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
    }


def binary_scores(truth, flagged) -> tuple[float, float, float]:
    """Precision, recall and F1 of the positive class by scikit-learn; 0.0 where undefined (nothing
    flagged, no positive, no rows)."""
    truth, flagged = np.asarray(truth, dtype=int), np.asarray(flagged, dtype=int)
    if not len(truth):
        return 0.0, 0.0, 0.0
    (precision,), (recall,), (f1,), _ = precision_recall_fscore_support(
        truth, flagged, labels=[1], average=None, zero_division=0.0
    )
    return float(precision), float(recall), float(f1)


def purchase_metrics(y_true, scores, threshold: float) -> dict[str, Any]:
    y_true = np.asarray(y_true, dtype=int)
    scores = np.asarray(scores, dtype=float)
    flagged = scores >= threshold
    precision, recall, f1 = binary_scores(y_true, flagged)
    return {
        "average_precision": float(average_precision_score(y_true, scores)) if y_true.any() else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "threshold": float(threshold),
        "positive_rate": float(y_true.mean()) if len(y_true) else 0.0,
        "flagged_rate": float(flagged.mean()) if len(flagged) else 0.0,
        "n": int(len(y_true)),
    }


def slice_masks(normalized: pd.Series, raw: pd.Series) -> dict[str, np.ndarray]:
    """The slices the report breaks accuracy down by."""
    length = raw.astype(str).str.len().to_numpy()
    return {
        "length <= 4": length <= 4,
        "length 5-15": (length > 4) & (length <= 15),
        "length > 15": length > 15,
        "has placeholder/number": normalized.map(lambda t: any(c in TOKEN_CHARS for c in t)).to_numpy(),
        "no placeholder/number": normalized.map(lambda t: not any(c in TOKEN_CHARS for c in t)).to_numpy(),
        "has Latin letters": normalized.map(has_latin).to_numpy(),
    }


def slice_metrics(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Accuracy per slice; `frame` has text, normalized, intent, pred_intent."""
    rows = []
    for name, mask in slice_masks(frame["normalized"], frame["text"]).items():
        if mask.any():
            part = frame[mask]
            rows.append({"slice": name, "n": int(mask.sum()), "accuracy": float((part["intent"] == part["pred_intent"]).mean())})
    return rows


def flat_metrics(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics with a prefix, for MLflow (per-intent tables stay in JSON artifacts)."""
    return {
        f"{prefix}_{key}": float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    }


def headline_metrics(metrics: dict[str, Any], split: str = "test") -> dict[str, float]:
    """The few numbers compared between runs and with the champion."""
    part = metrics[split]
    headline = {
        "intent_accuracy": part["intent"]["accuracy"],
        "intent_macro_f1": part["intent"]["macro_f1"],
        "intent_fallback_rate": part["intent"]["fallback_rate"],
        "intent_accepted_accuracy": part["intent"]["accepted_accuracy"],
        "intent_ece": part["intent"]["ece"],
    }
    if "purchase" in part:
        headline.update(
            {
                "purchase_average_precision": part["purchase"]["average_precision"],
                "purchase_precision": part["purchase"]["precision"],
                "purchase_recall": part["purchase"]["recall"],
                "purchase_f1": part["purchase"]["f1"],
            }
        )
    if split == "test" and "conversation" in metrics:
        conversation = metrics["conversation"]["test"]
        headline.update(
            {
                "conversation_precision": conversation["precision"],
                "conversation_recall": conversation["recall"],
                "conversation_f1": conversation["f1"],
                "conversation_average_precision": conversation["average_precision"],
            }
        )
    if split == "test" and "flagging" in metrics:
        flagging = metrics["flagging"]
        headline.update({"flag_precision": flagging["precision"], "flag_recall": flagging["recall"], "flag_f1": flagging["f1"]})
    return {key: float(value) for key, value in headline.items()}
