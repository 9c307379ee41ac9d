"""Conversation-level purchase intent: features over message-level outputs, and scoring.

Conversations reach these features through one path, `pipeline.nudge.features.flat_features` (roles mapped,
turns in time order, blank turns left out), used by training, `buyer-intent flag` and the service's
`/score_conversation`, so a conversation gets the same score wherever it is scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.inference import Predictor

BUYER = "buyer"
DEFAULT_PRE_SALES = (
    "product_spec",
    "size_fit",
    "stock",
    "price_promo",
    "place_order",
    "shipping_time",
    "logistics",
    "payment",
)
DEFAULT_CONCERNS = ("complaint", "return_refund")

# What a conversation model reads with `conversation_model.intent_mix_features: false`: the purchase scores and the
# chat's shape, plus the two intent summaries the taxonomy's rules rest on (pre-sales share: no purchase intent after
# payment; a complaint or refund request).
SCORE_AND_SHAPE_FEATURES = (
    "purchase_max", "purchase_mean", "purchase_top2", "n_flagged",
    "n_turns_log", "n_buyer_log", "last_turn_is_buyer",
    "pre_sales_share", "has_concern",
)


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    sent_at: str | None = None


def conversation_features(
    roles: Sequence[str],
    predictions: pd.DataFrame,
    purchase_threshold: float,
    pre_sales_intents: Sequence[str] = DEFAULT_PRE_SALES,
    concern_intents: Sequence[str] = DEFAULT_CONCERNS,
) -> dict[str, float]:
    """Features of one conversation. `predictions` holds one row per buyer turn, in order;
    `roles` is every turn's role, in order."""
    n_buyer = len(predictions)
    features: dict[str, float] = {
        "n_turns_log": math.log1p(len(roles)),
        "n_buyer_log": math.log1p(n_buyer),
        "last_turn_is_buyer": float(bool(roles) and roles[-1] == BUYER),
    }
    if n_buyer == 0:
        features.update({"purchase_max": 0.0, "purchase_mean": 0.0, "purchase_top2": 0.0, "n_flagged": 0.0})
        return features
    scores = predictions["purchase_score"].to_numpy(dtype=float)
    top2 = np.sort(scores)[-2:]
    intents = predictions["intent"].tolist()
    pre_sales = set(pre_sales_intents)
    concerns = set(concern_intents)
    features.update(
        {
            "purchase_max": float(scores.max()),
            "purchase_mean": float(scores.mean()),
            "purchase_top2": float(top2.mean()),
            "n_flagged": float((scores >= purchase_threshold).sum()),
            "pre_sales_share": sum(i in pre_sales for i in intents) / n_buyer,
            "has_concern": float(any(i in concerns for i in intents)),
            "confidence_mean": float(predictions["intent_confidence"].mean()),
            f"last_intent={intents[-1]}": 1.0,
        }
    )
    for intent in set(intents):
        features[f"share={intent}"] = intents.count(intent) / n_buyer
    return features


class ConversationScorer:
    """Scores whole conversations with the bundle's second-level model (or the max message score
    when the bundle has none)."""

    def __init__(self, predictor: Predictor, pre_sales_intents: Sequence[str] | None = None, concern_intents: Sequence[str] | None = None):
        self.predictor = predictor
        manifest = predictor.bundle.manifest
        self.model = predictor.bundle.conversation
        self.threshold = float(predictor.bundle.thresholds.get("conversation", predictor.purchase_threshold))
        cut = manifest.get("conversation_count_cut")
        # the score a buyer message needs to count in the feature n_flagged: a fixed cut when the model was trained
        # with one, else the message purchase threshold
        self.count_cut = float(cut) if cut is not None else predictor.purchase_threshold
        self.pre_sales_intents = tuple(pre_sales_intents or manifest.get("pre_sales_intents", DEFAULT_PRE_SALES))
        self.concern_intents = tuple(concern_intents or manifest.get("concern_intents", DEFAULT_CONCERNS))

    def score_features(self, features: list[dict[str, float]]) -> np.ndarray:
        if not features:
            return np.zeros(0)
        if self.model is None:
            return np.array([f["purchase_max"] for f in features])
        return self.model.predict_proba(features)[:, 1]
