"""Conversation features from messages laid out flat: the one path from turns to the conversation
model's input, for training, the batch job and the service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.conversation import BUYER, ConversationScorer, Turn, conversation_features
from pipeline.drift import threshold_of
from pipeline.nudge.policy import NudgePolicy
from pipeline.nudge.rows import lay_flat
from pipeline.text import mask_pii


def predict_messages(predictor, texts: Sequence[str], batch_size: int = 20_000) -> dict[str, np.ndarray]:
    """`Predictor.predict` on each distinct text once (chats repeat 在吗 / 好的 / 谢谢 a lot), expanded back.
    The model is row-wise, so the result equals predicting every row."""
    texts = np.asarray(texts, dtype=object)
    if not len(texts):
        empty = {"intent": np.array([], dtype=object), "intent_confidence": np.zeros(0), "purchase_score": np.zeros(0)}
        return empty | {"fallback": np.zeros(0, dtype=bool), "purchase_intent": np.zeros(0, dtype=np.int8), "n_unique": 0}
    codes, uniques = pd.factorize(texts)
    uniques = np.asarray(uniques, dtype=object)
    parts = [predictor.predict(uniques[i : i + batch_size].tolist()) for i in range(0, len(uniques), batch_size)]
    unique_predictions = pd.concat(parts, ignore_index=True)
    return {
        "intent": unique_predictions["intent"].to_numpy(dtype=object)[codes],
        "intent_confidence": unique_predictions["intent_confidence"].to_numpy(dtype=np.float64)[codes],
        "fallback": unique_predictions["fallback"].to_numpy(dtype=bool)[codes],
        "purchase_intent": unique_predictions["purchase_intent"].to_numpy(dtype=np.int8)[codes],
        "purchase_score": unique_predictions["purchase_score"].to_numpy(dtype=np.float64)[codes],
        "n_unique": len(uniques),
    }


class _Column(np.ndarray):
    """A numpy slice that also answers `.to_numpy()`, like the pandas column it stands in for."""

    def to_numpy(self, dtype=None):
        return np.asarray(self, dtype=dtype)


class _PredictionsView:
    """One conversation's rows of the flat predictions, readable by `conversation_features` like a
    DataFrame without building one per conversation (a DataFrame slice costs ~0.1 ms; 1M conversations)."""

    __slots__ = ("_flat", "_start", "_end")

    def __init__(self, flat: Mapping[str, np.ndarray], start: int, end: int):
        self._flat, self._start, self._end = flat, start, end

    def __len__(self) -> int:
        return self._end - self._start

    def __getitem__(self, name: str) -> _Column:
        return self._flat[name][self._start : self._end].view(_Column)


def _features(roles: list[str], flat: Mapping[str, np.ndarray], start: int, end: int, scorer: ConversationScorer):
    args = (scorer.count_cut, scorer.pre_sales_intents, scorer.concern_intents)
    return conversation_features(roles, _PredictionsView(flat, start, end), *args)


@dataclass
class FlatFeatures:
    """The conversation features of messages laid out flat, and the buyer-turn predictions they came from."""

    features: list[dict[str, float]]
    predictions: dict[str, np.ndarray]  # per buyer row: intent, intent_confidence, purchase_score ...
    buyer_rows: np.ndarray  # row of each buyer message in the flat layout
    conversation_of_buyer: np.ndarray
    buyer_starts: np.ndarray  # conversation c's buyer messages: buyer_starts[c]:buyer_starts[c+1]


def flat_features(roles: np.ndarray, texts: np.ndarray, starts: np.ndarray, scorer: ConversationScorer, predict_batch: int = 20_000) -> FlatFeatures:
    """The one function that turns conversations into the conversation model's features: training,
    the batch job and the service all come through here (`features_from_turns`, `score_flat`)."""
    roles = np.asarray(roles, dtype=object)
    texts = np.asarray(texts, dtype=object)
    starts = np.asarray(starts, dtype=np.int64)
    n_conv = len(starts) - 1
    buyer_rows = np.flatnonzero(roles == BUYER)
    conv_of_row = np.repeat(np.arange(n_conv), np.diff(starts))
    conv_of_buyer = conv_of_row[buyer_rows]
    flat = predict_messages(scorer.predictor, texts[buyer_rows], predict_batch)
    buyer_starts = np.searchsorted(conv_of_buyer, np.arange(n_conv + 1), side="left")
    roles_list = roles.tolist()
    features = [
        _features(roles_list[starts[c] : starts[c + 1]], flat, int(buyer_starts[c]), int(buyer_starts[c + 1]), scorer)
        for c in range(n_conv)
    ]
    return FlatFeatures(features, flat, buyer_rows, conv_of_buyer, buyer_starts)


def features_from_turns(conversations: Sequence[Sequence[Turn]], scorer: ConversationScorer, policy: NudgePolicy) -> list[dict[str, float]]:
    """Conversation features exactly as `decide` (the service) and the batch job compute them: roles mapped
    through the aliases, turns in time order, blank and unusable turns left out."""
    roles, texts, starts, _ = lay_flat(conversations, policy)
    return flat_features(np.asarray(roles, dtype=object), np.asarray(texts, dtype=object), np.asarray(starts), scorer).features


def score_flat(
    roles: np.ndarray,
    texts: np.ndarray,
    starts: np.ndarray,
    scorer: ConversationScorer,
    policy: NudgePolicy,
    predict_batch: int = 20_000,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-conversation scores and what the decision needs, from messages laid out flat: conversation c
    is rows starts[c]:starts[c+1], in time order; roles already normalised.

    Columns: purchase_score, evidence (masked, the buyer message with the highest purchase score),
    has_skip_intent, open_concern (the last buyer intent among `policy.concern_intents`, '' if none),
    last_turn_is_buyer, n_buyer_turns, n_confident_buyer_turns (buyer messages above the model's recorded
    ATC threshold, 0 without one: what a job sums for its label-free accuracy estimate, `pipeline.drift`)."""
    roles = np.asarray(roles, dtype=object)
    texts = np.asarray(texts, dtype=object)
    starts = np.asarray(starts, dtype=np.int64)
    n_conv = len(starts) - 1
    computed = flat_features(roles, texts, starts, scorer, predict_batch)
    features, flat, buyer_rows = computed.features, computed.predictions, computed.buyer_rows
    conv_of_buyer, buyer_starts = computed.conversation_of_buyer, computed.buyer_starts
    scores = np.concatenate(
        [scorer.score_features(features[i : i + predict_batch]) for i in range(0, n_conv, predict_batch)] or [np.zeros(0)]
    )
    n_buyer = np.diff(buyer_starts)
    has_buyer = n_buyer > 0
    atc = threshold_of(scorer.predictor.bundle.manifest)
    confident = flat["intent_confidence"] > atc if atc is not None else np.zeros(len(buyer_rows), dtype=bool)
    n_confident = np.bincount(conv_of_buyer[confident], minlength=n_conv)
    intents = flat["intent"]
    # Evidence: highest message purchase score, the earliest on ties.
    evidence = np.full(n_conv, "", dtype=object)
    if len(buyer_rows):
        order = np.lexsort((np.arange(len(buyer_rows)), -flat["purchase_score"], conv_of_buyer))
        first = order[np.searchsorted(conv_of_buyer[order], np.flatnonzero(has_buyer))]
        evidence[has_buyer] = [
            _evidence_text(text, policy.evidence_max_chars) for text in texts[buyer_rows[first]]
        ]
    skip = np.isin(intents, list(policy.skip_intents)) if len(intents) else np.zeros(0, dtype=bool)
    has_skip = np.bincount(conv_of_buyer[skip], minlength=n_conv) > 0
    concern_rows = np.flatnonzero(np.isin(intents, list(policy.concern_intents))) if len(intents) else np.zeros(0, dtype=int)
    open_concern = np.full(n_conv, "", dtype=object)
    if len(concern_rows):
        convs = conv_of_buyer[concern_rows]
        last = np.flatnonzero(np.append(convs[1:] != convs[:-1], True))  # the last concern row of each conversation
        open_concern[convs[last]] = intents[concern_rows[last]]
    ends = starts[1:] - 1
    last_is_buyer = np.zeros(n_conv, dtype=bool)
    nonempty = starts[1:] > starts[:-1]
    last_is_buyer[nonempty] = roles[ends[nonempty]] == BUYER
    frame = pd.DataFrame(
        {
            "purchase_score": scores.astype(np.float64),
            "evidence": evidence,
            "has_skip_intent": has_skip,
            "open_concern": open_concern,
            "last_turn_is_buyer": last_is_buyer,
            "n_buyer_turns": n_buyer.astype(np.int64),
            "n_confident_buyer_turns": n_confident.astype(np.int64),
        }
    )
    return frame, {"buyer_messages": int(len(buyer_rows)), "unique_buyer_texts": int(flat["n_unique"])}


def _evidence_text(text: str, max_chars: int) -> str:
    masked = mask_pii(text).replace("\r", " ").replace("\n", " ").strip()
    return masked if len(masked) <= max_chars else masked[: max_chars - 1] + "…"
