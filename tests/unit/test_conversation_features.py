"""The conversation model reads what its config says it reads (`conversation_model.intent_mix_features`)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from pipeline.config import load_config
from pipeline.conversation import SCORE_AND_SHAPE_FEATURES
from pipeline.estimators import FeatureSubset
from pipeline.training.model import build_conversation_pipeline


def _rows(n: int = 80, seed: int = 0) -> tuple[list[dict[str, float]], np.ndarray]:
    """Feature dicts where the label follows purchase_max, and an intent-mix feature that follows it too."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rows = []
    for label in y:
        rows.append({
            "purchase_max": float(rng.uniform(0.6, 1.0) if label else rng.uniform(0.0, 0.4)),
            "purchase_mean": float(rng.uniform(0.0, 0.5)),
            "n_buyer_log": float(rng.uniform(0.5, 2.5)),
            "share=stock": float(label),
            f"last_intent={'place_order' if label else 'thanks'}": 1.0,
        })
    return rows, y


def test_feature_subset_keeps_only_the_named_keys():
    subset = FeatureSubset(keep=("b", "a"))
    assert not hasattr(subset, "keep_")  # no work in __init__
    with pytest.raises(NotFittedError):
        subset.transform([{"a": 1.0}])
    assert subset.fit([{"a": 1.0}]) is subset
    assert subset.transform([{"a": 1.0, "b": 2.0, "c": 3.0}, {"c": 1.0}]) == [{"a": 1.0, "b": 2.0}, {}]
    assert subset.keep_ == ("a", "b")


def test_without_the_intent_mix_the_conversation_model_ignores_it():
    config = load_config(overrides={"conversation_model.intent_mix_features": False})
    rows, y = _rows()
    model = build_conversation_pipeline(config).fit(rows, y)
    assert set(model.named_steps["vectorize"].feature_names_) <= set(SCORE_AND_SHAPE_FEATURES)
    # the same chat with another intent mix gets the same score
    other_mix = [{k: v for k, v in row.items() if not k.startswith(("share=", "last_intent="))} | {"share=complaint": 1.0}
                 for row in rows]
    assert np.array_equal(model.predict_proba(rows), model.predict_proba(other_mix))


def test_with_the_intent_mix_the_conversation_model_reads_it():
    config = load_config(overrides={"conversation_model.intent_mix_features": True})
    rows, y = _rows()
    model = build_conversation_pipeline(config).fit(rows, y)
    assert "share=stock" in model.named_steps["vectorize"].feature_names_
    flipped = [row | {"share=stock": 1.0 - row["share=stock"]} for row in rows]
    assert not np.allclose(model.predict_proba(rows), model.predict_proba(flipped))


def test_the_default_config_leaves_the_intent_mix_out():
    assert load_config().conversation_model.intent_mix_features is False
