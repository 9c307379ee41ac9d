"""Precision / recall / F1 of purchase intent and of the nudge flags come from one scikit-learn call."""

import numpy as np
import pytest

from pipeline.training.evaluate import binary_scores, purchase_metrics
from pipeline.training.flag_eval import flagging_metrics


def test_a_known_case():
    truth = [1, 1, 1, 0, 0, 0]
    flagged = [1, 1, 0, 1, 0, 0]
    assert binary_scores(truth, flagged) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


@pytest.mark.parametrize(
    ("truth", "flagged"),
    [([], []), ([0, 0], [0, 0]), ([1, 0], [0, 0]), ([0, 0], [1, 1])],
    ids=["no rows", "no positives, nothing flagged", "nothing flagged", "no positives"],
)
def test_undefined_scores_are_zero_without_warnings(truth, flagged, recwarn):
    assert binary_scores(truth, flagged) == (0.0, 0.0, 0.0)
    assert not recwarn.list


def test_purchase_and_flagging_metrics_agree_on_the_same_decisions():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 200)
    scores = rng.random(200)
    purchase = purchase_metrics(truth, scores, 0.6)
    flags = flagging_metrics(truth.astype(bool), scores >= 0.6, np.ones(200, dtype=bool))
    assert [purchase[k] for k in ("precision", "recall", "f1")] == [flags[k] for k in ("precision", "recall", "f1")]
    assert purchase["f1"] == pytest.approx(2 * purchase["precision"] * purchase["recall"] / (purchase["precision"] + purchase["recall"]))
