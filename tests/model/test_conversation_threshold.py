"""Where the conversation threshold is chosen (`conversation_model.threshold_folds`): on the validation conversations,
or on out-of-fold scores of the training and validation conversations together, with the model then fitted on both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.conversation import Turn
from pipeline.data.labelled import LabelledData, validate_labelled
from pipeline.training import train as train_module
from pipeline.training.train import ConversationData, train
from tests.batch.builders import labelled_conversations, labelled_messages

SMALL = {"paths.data": "unused.csv", "intent_model.classifier": "logreg", "intent_model.C": 4.0, "features.char_analyzer": "char"}


def _conversations() -> pd.DataFrame:
    frame = pd.DataFrame(labelled_conversations())
    frame["turns"] = [[Turn(role, text) for role, text in turns] for turns in frame["turns"]]
    return frame


def _train(folds: int):
    config = load_config(overrides={**SMALL, "conversation_model.threshold_folds": folds})
    valid, _ = validate_labelled(labelled_messages(), "fixture", config.split.min_examples_per_label)
    data = LabelledData(valid, pd.DataFrame(columns=["source", "row", "reason", "raw"]), "fixture")
    return train(config, data, ConversationData(_conversations(), "fixture"))


@pytest.fixture(scope="module")
def trained():
    return {folds: _train(folds) for folds in (0, 3)}


def test_by_default_the_threshold_is_chosen_on_the_validation_conversations(trained):
    metrics = trained[0].metrics["conversation"]
    assert load_config().conversation_model.threshold_folds == 0
    assert metrics["threshold_chosen_on"] == "validation"
    assert metrics["val"]["n"] == metrics["sizes"]["val"]


def test_cross_fitted_threshold_is_chosen_on_every_training_and_validation_conversation(trained):
    metrics = trained[3].metrics["conversation"]
    assert metrics["threshold_chosen_on"] == "out_of_fold_3"
    assert metrics["val"]["n"] == metrics["sizes"]["train"] + metrics["sizes"]["val"]
    assert trained[3].bundle.thresholds["conversation"] == pytest.approx(metrics["threshold"])
    # the test conversations are the same held-out ones either way
    assert metrics["test"]["n"] == trained[0].metrics["conversation"]["test"]["n"] == metrics["sizes"]["test"]


def test_cross_fitted_threshold_is_reproducible():
    first, second = _train(3), _train(3)
    assert first.metrics["conversation"]["threshold"] == second.metrics["conversation"]["threshold"]


class _RecordingModel:
    """Stands in for the conversation pipeline: remembers which buyers it was fitted on."""

    def fit(self, features, y):
        self.buyers_ = {row["buyer"] for row in features}
        return self


class _RecordingScorer:
    model: _RecordingModel | None = None

    def score_features(self, features):
        # 1.0 when the scoring model saw this conversation's buyer: out-of-fold scores must all be 0
        return np.array([float(row["buyer"] in self.model.buyers_) for row in features])


def test_out_of_fold_scores_never_come_from_a_model_fitted_on_the_same_buyer(monkeypatch):
    monkeypatch.setattr(train_module, "build_conversation_pipeline", lambda config: _RecordingModel())
    config = load_config(overrides={"conversation_model.threshold_folds": 4})
    buyers = np.array([f"b{i // 3}" for i in range(60)])  # three conversations per buyer
    y = np.array([i % 2 for i in range(60)])
    features = [{"buyer": buyer} for buyer in buyers]
    scores = train_module._out_of_fold_conversation_scores(config, _RecordingScorer(), features, y, buyers)
    assert scores.shape == (60,) and not scores.any()


@pytest.mark.parametrize("folds", [1, -1])
def test_a_single_or_negative_fold_count_is_rejected(folds):
    with pytest.raises(ConfigError, match="threshold_folds"):
        load_config(overrides={"conversation_model.threshold_folds": folds})
