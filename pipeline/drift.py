"""How far a batch of buyer messages sits from what the model was validated on, without labels.

Average Thresholded Confidence (ATC; Garg et al., "Leveraging unlabeled data to predict out-of-distribution
performance", ICLR 2022): training records the confidence threshold above which the share of validation
messages equals the validation accuracy; on new messages the share above it estimates the accuracy there.
On the real-chat dev set the default model's estimate reads 0.79 where it is right 0.68 of the time
(validation: 0.91). Under a shift that large ATC overestimates, so the fall from the validation accuracy is
the alarm, and the estimate is optimistic, not the accuracy itself. Small and free of training code: the
batch jobs import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

MANIFEST_KEY = "accuracy_estimate"


def atc_threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """The confidence above which the share of the labelled (validation) messages equals their accuracy."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    if not len(confidence):
        raise ValueError("no validation message to set the ATC threshold on")
    return float(np.quantile(confidence, 1.0 - correct.mean()))


def atc_accuracy(confidence: np.ndarray, threshold: float) -> float:
    """ATC's estimate of the accuracy on unlabelled messages: the share above the threshold."""
    return float(np.mean(np.asarray(confidence, dtype=float) > threshold))


def manifest_record(confidence: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """What training writes under `MANIFEST_KEY`: the threshold and the validation accuracy it reproduces."""
    correct = np.asarray(correct, dtype=bool)
    return {"method": "ATC", "threshold": atc_threshold(confidence, correct),
            "validation_accuracy": float(correct.mean()), "validation_messages": int(len(correct))}


@dataclass(frozen=True)
class AccuracyEstimate:
    messages: int
    estimated: float  # ATC's estimate of the intent accuracy on these messages
    validated: float  # the intent accuracy on the validation messages the model was calibrated on

    @property
    def drop(self) -> float:
        return self.validated - self.estimated

    def message(self) -> str:
        return (f"estimated intent accuracy on these {self.messages:,} messages {self.estimated:.2f} (ATC, no labels; "
                f"optimistic when the shift is large) against {self.validated:.2f} on validation")


def estimate(confidence: np.ndarray, manifest: Mapping[str, Any]) -> AccuracyEstimate | None:
    """None for a model trained before the record existed, or for no messages (NaN: a row not scored)."""
    threshold = threshold_of(manifest)
    if threshold is None:
        return None
    confidence = np.asarray(confidence, dtype=float)
    confidence = confidence[np.isfinite(confidence)]
    return estimate_from_counts(int(np.count_nonzero(confidence > threshold)), len(confidence), manifest)


def estimate_from_counts(above: int, messages: int, manifest: Mapping[str, Any]) -> AccuracyEstimate | None:
    """The same from the count of messages above the recorded threshold (`threshold_of`): what a distributed
    job sums up."""
    record = manifest.get(MANIFEST_KEY)
    if not record or not messages:
        return None
    return AccuracyEstimate(int(messages), above / messages, float(record["validation_accuracy"]))


def summary_record(estimate: AccuracyEstimate | None) -> dict[str, Any] | None:
    """The estimate as a job summary (JSON) records it."""
    if estimate is None:
        return None
    return {"method": "ATC", "buyer_messages": estimate.messages, "estimated_accuracy": estimate.estimated,
            "validation_accuracy": estimate.validated, "drop": estimate.drop}


def shift_warnings(estimate: AccuracyEstimate | None, warn_drop: float) -> list[str]:
    """What to tell the user when the estimate falls `warn_drop` or more below validation (config `drift.warn_drop`):
    one warning or none, as the job summaries' other `*_warnings` give them."""
    if estimate is None or estimate.drop < warn_drop:
        return []
    return [f"these messages read unlike the data the model was validated on (estimated accuracy {estimate.drop:.2f} "
            "lower): its confidence and fallback hand-over overstate how often it is right here; calibrate a model "
            "on such chats with `buyer-intent train --calibration-chats EXPORT` (or label some: --calibration-data)"]


def threshold_of(manifest: Mapping[str, Any]) -> float | None:
    record = manifest.get(MANIFEST_KEY)
    return float(record["threshold"]) if record else None
