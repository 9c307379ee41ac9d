"""`decide`: one Decision per conversation, exactly as `buyer-intent flag` decides; the service's entry point."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.conversation import ConversationScorer, Turn
from pipeline.nudge.features import score_flat
from pipeline.nudge.orders import OrdersIndex
from pipeline.nudge.policy import ORDERED_UNKNOWN, REASON_DUPLICATE, REASON_FLAGGED, NudgePolicy
from pipeline.nudge.rows import lay_flat
from pipeline.nudge.rules import apply_one_per_window, decide_table
from pipeline.times import MISSING_TIME, format_times


@dataclass(frozen=True)
class ConversationInput:
    conversation_id: str
    buyer_id: str
    shop_id: str
    turns: Sequence[Turn]
    category: str | None = None
    ordered: bool | None = None  # known outcome; ignored when decide() gets an orders index


# The nudge list's columns (a subset of Decision's fields), in the order of `buyer-intent flag` output
# and of the service's /flag rows.
NUDGE_COLUMNS = (
    "conversation_id", "buyer_id", "shop_id", "category", "purchase_score", "evidence",
    "open_concern", "suggested_nudge", "nudge_text", "priority", "send_after",
)


@dataclass(frozen=True)
class Decision:
    conversation_id: str
    buyer_id: str
    shop_id: str
    category: str | None
    purchase_score: float
    expressed_purchase_intent: bool
    lost: bool | None
    nudge: bool  # on the nudge list
    reason: str  # flagged | not_lost | no_purchase_intent | complaint_or_refund | duplicate_in_window | order_unknown
    evidence: str  # masked buyer message that showed the most purchase intent
    open_concern: str  # '' when none
    suggested_nudge: str
    nudge_text: str
    priority: int
    send_after: str | None  # ISO 8601 in the policy's time zone
    last_message_at: str | None
    buyer_messages: int  # buyer messages the model read
    confident_buyer_messages: int  # of them, above the model's ATC threshold (pipeline.drift; 0 without a record)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def decide(
    conversations: Sequence[ConversationInput],
    scorer: ConversationScorer,
    policy: NudgePolicy,
    orders_index: OrdersIndex | None = None,
) -> list[Decision]:
    """One Decision per conversation, in input order, exactly as `buyer-intent flag` decides."""
    if not conversations:
        return []
    roles, texts, starts, times = lay_flat([c.turns for c in conversations], policy)
    first, last = [], []
    for turn_times in times:
        all_known = len(turn_times) and not (turn_times == MISSING_TIME).any()
        first.append(int(turn_times.min()) if all_known else MISSING_TIME)
        last.append(int(turn_times.max()) if all_known else MISSING_TIME)
    scored, _ = score_flat(np.asarray(roles, dtype=object), np.asarray(texts, dtype=object), np.asarray(starts), scorer, policy)
    table = pd.concat(
        [
            pd.DataFrame(
                {
                    "conversation_id": [str(c.conversation_id) for c in conversations],
                    "buyer_id": [str(c.buyer_id) for c in conversations],
                    "shop_id": [str(c.shop_id) for c in conversations],
                    "first_ms": np.asarray(first, dtype=np.int64),
                    "last_ms": np.asarray(last, dtype=np.int64),
                    "ordered": np.asarray(
                        [ORDERED_UNKNOWN if c.ordered is None else int(bool(c.ordered)) for c in conversations], dtype=np.int8
                    ),
                }
            ),
            scored,
        ],
        axis=1,
    )
    decided = decide_table(table, policy, policy.threshold(scorer), orders_index)
    candidates = np.flatnonzero(decided["candidate"].to_numpy())
    keep = apply_one_per_window(decided.iloc[candidates], policy)
    reasons = decided["reason"].to_numpy(object).copy()
    reasons[candidates[~keep]] = REASON_DUPLICATE
    send_after = format_times(decided["send_after_ms"].to_numpy(), policy.tz)
    last_at = format_times(decided["last_ms"].to_numpy(), policy.tz)
    lost = decided["lost"].to_numpy()
    return [
        Decision(
            conversation_id=row.conversation_id,
            buyer_id=row.buyer_id,
            shop_id=row.shop_id,
            category=conversations[i].category,
            purchase_score=float(row.purchase_score),
            expressed_purchase_intent=bool(row.expressed_purchase_intent),
            lost=None if lost[i] == -1 else bool(lost[i]),
            nudge=reasons[i] == REASON_FLAGGED,
            reason=str(reasons[i]),
            evidence=str(row.evidence),
            open_concern=str(row.open_concern),
            suggested_nudge=str(row.suggested_nudge),
            nudge_text=str(row.nudge_text),
            priority=int(row.priority),
            send_after=send_after[i],
            last_message_at=last_at[i],
            buyer_messages=int(row.n_buyer_turns),
            confident_buyer_messages=int(row.n_confident_buyer_turns),
        )
        for i, row in enumerate(decided.itertuples(index=False))
    ]
