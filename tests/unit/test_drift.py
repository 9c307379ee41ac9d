"""`pipeline.drift`: the label-free accuracy estimate (ATC) that training records and `predict`, `flag` and the
service report."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.drift import MANIFEST_KEY, AccuracyEstimate, estimate, manifest_record, shift_warnings, summary_record


def _validation(n: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.2, 1.0, n)
    correct = rng.random(n) < confidence  # calibrated by construction: right as often as confident
    return confidence, correct


def test_the_record_reproduces_the_validation_accuracy_on_the_validation_messages():
    confidence, correct = _validation()
    record = manifest_record(confidence, correct)
    assert record["validation_accuracy"] == pytest.approx(correct.mean())
    assert record["validation_messages"] == len(correct)
    found = estimate(confidence, {MANIFEST_KEY: record})
    assert found.estimated == pytest.approx(correct.mean(), abs=1 / len(correct) + 1e-9)
    assert found.drop == pytest.approx(0.0, abs=1 / len(correct) + 1e-9)


def test_less_confident_messages_read_as_a_drop_in_accuracy():
    confidence, correct = _validation()
    manifest = {MANIFEST_KEY: manifest_record(confidence, correct)}
    shifted = estimate(confidence * 0.7, manifest)  # the same messages, less sure of themselves
    assert shifted.estimated < correct.mean() - 0.1
    assert shifted.drop > 0.1
    surer = estimate(np.minimum(confidence * 1.3, 1.0), manifest)
    assert surer.estimated > correct.mean() and surer.drop < 0


def test_no_record_or_no_scored_message_gives_no_estimate_and_missing_confidences_are_skipped():
    confidence, correct = _validation()
    manifest = {MANIFEST_KEY: manifest_record(confidence, correct)}
    assert estimate(confidence, {}) is None  # a model trained before the record existed
    assert estimate(np.array([np.nan, np.nan]), manifest) is None  # only agent and bot rows
    mixed = estimate(np.r_[confidence, [np.nan] * 50], manifest)
    assert mixed.messages == len(confidence)
    assert mixed.estimated == estimate(confidence, manifest).estimated


def test_the_summary_says_what_was_estimated():
    found = AccuracyEstimate(messages=1234, estimated=0.7234, validated=0.9111)
    assert found.drop == pytest.approx(0.1877)
    assert "1,234 messages 0.72" in found.message() and "0.91 on validation" in found.message()


def test_an_empty_validation_set_is_refused():
    with pytest.raises(ValueError, match="no validation message"):
        manifest_record(np.array([]), np.array([], dtype=bool))


def test_counts_summed_elsewhere_give_the_same_estimate_as_the_confidences():
    from pipeline.drift import estimate_from_counts, threshold_of

    confidence, correct = _validation()
    manifest = {MANIFEST_KEY: manifest_record(confidence, correct)}
    batch = confidence[:777] * 0.9
    above = int((batch > threshold_of(manifest)).sum())
    assert estimate_from_counts(above, len(batch), manifest) == estimate(batch, manifest)
    assert estimate_from_counts(0, 0, manifest) is None and threshold_of({}) is None


def test_the_warning_starts_at_the_set_drop_and_the_record_holds_the_figures():
    assert len(shift_warnings(AccuracyEstimate(100, 0.75, 0.875), warn_drop=0.125)) == 1  # exactly the set drop (binary fractions)
    assert len(shift_warnings(AccuracyEstimate(100, 0.84, 0.90), warn_drop=0.05)) == 1
    assert shift_warnings(AccuracyEstimate(100, 0.86, 0.90), warn_drop=0.05) == []
    assert shift_warnings(AccuracyEstimate(100, 0.10, 0.90), warn_drop=1.0) == []  # the setting silences it
    assert shift_warnings(None, warn_drop=0.0) == []  # a model without the record
    assert "0.30 lower" in shift_warnings(AccuracyEstimate(100, 0.60, 0.90), warn_drop=0.05)[0]
    assert summary_record(AccuracyEstimate(40, 0.75, 0.90)) == {"method": "ATC", "buyer_messages": 40, "estimated_accuracy": 0.75,
                                                                 "validation_accuracy": 0.90, "drop": pytest.approx(0.15)}
    assert summary_record(None) is None
