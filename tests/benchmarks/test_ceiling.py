"""`benchmarks/ceiling.py`'s building blocks: the word-dropped copies it trains and calibrates on, the
hand-over to `other`, the stacked purchase features, and the table it writes (no shared data needed)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.ceiling import drop_words, render, stack_features, to_other

WORDS = ["我", "想", "退", "这个", "订单", "的", "钱"]


def test_dropping_words_is_seeded_and_never_empties_a_message():
    assert drop_words(WORDS, 0.5, np.random.default_rng(7)) == drop_words(WORDS, 0.5, np.random.default_rng(7))
    assert drop_words(WORDS, 0.0, np.random.default_rng(0)) == "".join(WORDS)
    assert drop_words(WORDS, 1.0, np.random.default_rng(0)) == "".join(WORDS)  # all dropped: kept whole
    rng = np.random.default_rng(1)
    lengths = [len(drop_words(WORDS, 0.3, rng)) for _ in range(2000)]
    assert 0 < min(lengths) and max(lengths) <= len("".join(WORDS))
    # about 30% of the words go: the kept share of characters lands near 0.7
    assert np.mean(lengths) / len("".join(WORDS)) == pytest.approx(0.7, abs=0.05)


def test_low_confidence_goes_to_other_and_the_rest_keeps_its_arg_max():
    classes = np.array(["deny", "other", "stock"])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.4, 0.25, 0.35], [0.1, 0.1, 0.8]])
    assert list(to_other(probabilities, classes, 0.5)) == ["deny", "other", "stock"]
    assert list(to_other(probabilities, classes, 0.0)) == ["deny", "deny", "stock"]
    assert list(to_other(probabilities, classes, 0.95)) == ["other", "other", "other"]


def test_stacked_features_are_the_purchase_logit_then_the_intent_probabilities():
    purchase = np.array([0.0, 0.5, 1.0])
    intents = np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
    features = stack_features(purchase, intents)
    assert features.shape == (3, 3)
    assert np.isfinite(features).all()  # 0 and 1 are clipped, not infinite
    assert features[1, 0] == pytest.approx(0.0)
    assert features[0, 0] < 0 < features[2, 0]
    np.testing.assert_array_equal(features[:, 1:], intents)


def test_the_table_has_a_row_per_option_and_dashes_where_a_figure_does_not_apply():
    row_intent = {"name": "a", "kind": "intent", "val": {"accuracy": 0.9, "macro_f1": 0.88, "ece": 0.02},
                  "dev": {"accuracy": 0.68, "macro_f1": 0.66, "ece": 0.14}}
    row_purchase = {"name": "b", "kind": "purchase", "val": {"ap": 0.94, "precision": 0.9, "recall": 0.8, "f1": 0.85},
                    "dev": {"ap": 0.59, "precision": 0.93, "recall": 0.32, "f1": 0.47}}
    text = render({"rows": [row_intent, row_purchase], "train": 10, "val": 5, "dev": 6, "held": ["w04", "w05"]}, seed=13)
    table = [line for line in text.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert len(table) == 2
    cells_a = [c.strip() for c in table[0].strip("|").split("|")]
    cells_b = [c.strip() for c in table[1].strip("|").split("|")]
    assert cells_a[2:5] == ["0.900", "0.880", "0.020"] and cells_a[5:7] == ["-", "-"]
    assert cells_b[2:5] == ["-", "-", "-"] and cells_b[-1] == "0.930 / 0.320 / 0.470"
    assert "w04 and w05" in text


def test_against_the_default_lists_only_the_figures_an_option_changes():
    from benchmarks.ceiling import against_default

    base = {"name": "default", "kind": "-", "val": {"accuracy": 0.9, "macro_f1": 0.88, "ece": 0.02, "ap": 0.94, "f1": 0.86},
            "dev": {"accuracy": 0.68, "macro_f1": 0.66, "ece": 0.14, "ap": 0.59, "f1": 0.47}}
    purchase = {"name": "p", "kind": "purchase", "val": {"ap": 0.95, "f1": 0.88}, "dev": {"ap": 0.55, "f1": 0.50}}
    calibration = {"name": "c", "kind": "calibration", "val": {"accuracy": 0.9, "macro_f1": 0.88, "ece": 0.05},
                   "dev": {"accuracy": 0.68, "macro_f1": 0.66, "ece": 0.08}}
    lines = against_default([base, purchase, calibration])
    assert lines[0] == "- p: held-out ap +0.010, f1 +0.020; dev ap -0.040, f1 +0.030."
    assert lines[1] == "- c: held-out accuracy +0.000, macro-f1 +0.000, ece +0.030; dev accuracy +0.000, macro-f1 +0.000, ece -0.060."
