"""The conversation model reads what its config says it reads (`conversation_model.intent_mix_features`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.exceptions import NotFittedError

from pipeline.bundle import TRUSTED_TYPES
from pipeline.config import load_config
from pipeline.conversation import SCORE_AND_SHAPE_FEATURES, conversation_features
from pipeline.estimators import FeatureSubset
from pipeline.training.model import build_conversation_pipeline

INTENTS = ("greeting", "stock", "price_promo", "place_order", "thanks", "complaint", "logistics")


def _chats(n: int = 80, seed: int = 0) -> tuple[list[dict[str, float]], np.ndarray]:
    """Features of generated chats, through the same `conversation_features` as training and serving: the label
    follows the best purchase score, and the intent mix follows the label too (as on generated conversations)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rows = []
    for label in y:
        k = int(rng.integers(2, 6))
        scores = rng.uniform(0.0, 0.3, k)
        if label:
            scores[-1] = rng.uniform(0.6, 1.0)
        intents = list(rng.choice(INTENTS, k))
        intents[-1] = "place_order" if label else "thanks"
        predictions = pd.DataFrame({"purchase_score": scores, "intent": intents, "intent_confidence": rng.uniform(0.4, 1.0, k)})
        rows.append(conversation_features(["buyer", "agent"] * k, predictions, purchase_threshold=0.5))
    return rows, y


def test_feature_subset_keeps_only_the_named_keys():
    subset = FeatureSubset(keep=("b", "a"))
    assert not hasattr(subset, "keep_")  # no work in __init__
    with pytest.raises(NotFittedError):
        subset.transform([{"a": 1.0}])
    assert subset.fit([{"a": 1.0, "b": 0.0}]) is subset
    assert subset.transform([{"a": 1.0, "b": 2.0, "c": 3.0}, {"c": 1.0}]) == [{"a": 1.0, "b": 2.0}, {}]
    assert subset.keep_ == ("a", "b")


def test_a_feature_no_training_row_has_is_refused():
    with pytest.raises(ValueError, match="purchse_max"):
        FeatureSubset(keep=("purchase_max", "purchse_max")).fit([{"purchase_max": 0.5}])


def test_without_the_intent_mix_the_model_reads_exactly_the_score_and_shape_features():
    config = load_config(overrides={"conversation_model.intent_mix_features": False})
    rows, y = _chats()
    model = build_conversation_pipeline(config).fit(rows, y)
    # every name exists in what conversation_features produces, and nothing else is read
    assert model.named_steps["vectorize"].feature_names_ == sorted(SCORE_AND_SHAPE_FEATURES)
    # the same chat with another intent mix gets the same score
    other_mix = [{k: v for k, v in row.items() if not k.startswith(("share=", "last_intent=", "confidence_mean"))}
                 | {"share=complaint": 1.0, "last_intent=complaint": 1.0, "confidence_mean": 0.1} for row in rows]
    assert np.array_equal(model.predict_proba(rows), model.predict_proba(other_mix))


def test_with_the_intent_mix_the_conversation_model_reads_it():
    config = load_config(overrides={"conversation_model.intent_mix_features": True})
    rows, y = _chats()
    model = build_conversation_pipeline(config).fit(rows, y)
    assert "last_intent=place_order" in model.named_steps["vectorize"].feature_names_
    swapped = [{k: v for k, v in row.items() if not k.startswith("last_intent=")} | {"last_intent=thanks": 1.0} for row in rows]
    assert not np.allclose(model.predict_proba(rows), model.predict_proba(swapped))


def test_the_subset_model_loads_from_a_skops_file_with_the_trusted_types(tmp_path):
    config = load_config(overrides={"conversation_model.intent_mix_features": False})
    rows, y = _chats()
    model = build_conversation_pipeline(config).fit(rows, y)
    path = tmp_path / "conversation.skops"
    sio.dump(model, path)
    untrusted = set(sio.get_untrusted_types(file=path))
    assert untrusted <= TRUSTED_TYPES and "pipeline.estimators.FeatureSubset" in untrusted
    loaded = sio.load(path, trusted=sorted(untrusted))
    assert np.array_equal(loaded.predict_proba(rows), model.predict_proba(rows))


def test_the_default_config_leaves_the_intent_mix_out():
    assert load_config().conversation_model.intent_mix_features is False
