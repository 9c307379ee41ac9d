"""ROUND26_RULES.md, AW: `conversation_model.count_cut` fixes the score a buyer message needs to count in the
conversation feature n_flagged, so the nudge list stops reading the message purchase threshold (which is chosen on a
few hundred positives and jumps between retrainings). Small real models trained in seconds (tests/batch/builders.py)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from pipeline.bundle import ModelBundle
from pipeline.config import load_config, load_flag_settings
from pipeline.conversation import ConversationScorer, Turn
from pipeline.data.labelled import LabelledData, validate_labelled
from pipeline.inference import Predictor
from pipeline.nudge import NudgePolicy
from pipeline.nudge.features import features_from_turns
from pipeline.training.train import ConversationData, train
from tests.batch.builders import labelled_conversations, labelled_messages

BASE = {"paths.data": "unused.csv", "paths.conversations": None, "paths.orders": None}


def _train(**overrides) -> tuple[ModelBundle, list[list[Turn]]]:
    config = load_config(overrides={**BASE, **overrides})
    valid, _ = validate_labelled(labelled_messages(), "fixture", config.split.min_examples_per_label)
    data = LabelledData(valid, pd.DataFrame(columns=["source", "row", "reason", "raw"]), "fixture")
    conversations = pd.DataFrame(labelled_conversations())
    conversations["turns"] = [[Turn(role, text) for role, text in turns] for turns in conversations["turns"]]
    result = train(config, data, ConversationData(conversations, "fixture"))
    return result.bundle, conversations["turns"].tolist()


def _with_purchase_threshold(bundle: ModelBundle, threshold: float) -> ModelBundle:
    manifest = copy.deepcopy(bundle.manifest)
    manifest["thresholds"]["purchase"] = threshold
    return ModelBundle(bundle.intent, bundle.purchase, bundle.conversation, manifest)


def _without_cut(bundle: ModelBundle) -> ModelBundle:
    """The bundle as one trained before the option reads: no cut recorded, so the count is over the message threshold."""
    manifest = {k: v for k, v in copy.deepcopy(bundle.manifest).items() if k != "conversation_count_cut"}
    return ModelBundle(bundle.intent, bundle.purchase, bundle.conversation, manifest)


def _scores(bundle: ModelBundle, turns: list[list[Turn]]):
    scorer = ConversationScorer(Predictor(bundle))
    policy = NudgePolicy.from_settings(load_flag_settings(load_config(overrides=BASE).flag))
    features = features_from_turns(turns, scorer, policy)
    return [f["n_flagged"] for f in features], scorer.score_features(features)


@pytest.fixture(scope="module")
def trained():
    fixed, turns = _train(**{"conversation_model.count_cut": 0.5})
    return (_without_cut(fixed), turns), (fixed, turns)


def test_with_a_fixed_cut_the_conversation_scores_do_not_read_the_message_threshold(trained):
    (uncut, turns), (fixed, _) = trained
    assert "conversation_count_cut" not in uncut.manifest and fixed.manifest["conversation_count_cut"] == 0.5
    counts, scores = _scores(fixed, turns)
    for threshold in (0.05, 0.95):
        moved_counts, moved_scores = _scores(_with_purchase_threshold(fixed, threshold), turns)
        assert moved_counts == counts and (moved_scores == scores).all()
    # without a cut the count is over the message threshold: moving it moves the counts and the scores
    counts, scores = _scores(uncut, turns)
    low_counts, low_scores = _scores(_with_purchase_threshold(uncut, 0.05), turns)
    assert sum(low_counts) > sum(counts) and (low_scores != scores).any()


def test_the_fixed_cut_counts_messages_at_or_over_it(trained):
    _, (fixed, turns) = trained
    scorer = ConversationScorer(Predictor(fixed))
    assert scorer.count_cut == 0.5 != scorer.predictor.purchase_threshold
    buyer_texts = [[t.text for t in conversation if t.role == "buyer"] for conversation in turns[:20]]
    counts, _ = _scores(fixed, turns[:20])
    for texts, count in zip(buyer_texts, counts, strict=True):
        scores = Predictor(fixed).predict_arrays(texts)["purchase_score"] if texts else []
        assert count == sum(float(s) >= 0.5 for s in scores)
