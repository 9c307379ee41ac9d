"""How well the nudge list matches the truth, on held-out labelled conversations.

The truth of a conversation is "lost AND expressed purchase intent": lost comes from the orders (the
flag job's own rule and window), expressed purchase intent from the conversation's label. The flags
are what `buyer-intent flag` would output for these conversations (`pipeline.nudge.decide`, the same
decisions, policy included: buyers who complained or asked for a refund are skipped, one nudge per
buyer and shop per window), so a skipped buyer with intent counts as missed: the figures say what
marketing would actually get.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.conversation import ConversationScorer
from pipeline.training.evaluate import binary_scores
from pipeline.nudge import ConversationInput, NudgePolicy, OrdersIndex, decide
from pipeline.nudge.policy import REASON_DUPLICATE, REASON_SKIPPED
from pipeline.nudge.rows import ORDER_COLUMNS, check_order_rows
from pipeline.data.tables import PLAIN_COLUMNS, ColumnNames, read_table


def load_orders_index(orders: str | Path, policy: NudgePolicy, names: ColumnNames = PLAIN_COLUMNS) -> tuple[OrdersIndex, dict[str, Any]]:
    """The orders of the labelled conversations (a small file read whole), checked by the flag job's
    row check (`nudge.rows.check_order_rows`), and their row counts."""
    frame, rejected = read_table(orders, names.only(ORDER_COLUMNS))
    frame = frame.drop(columns=["_line"], errors="ignore")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ORDER_COLUMNS if c not in frame.columns]
    if missing and len(frame):
        raise ValueError(f"{orders}: missing column(s) {missing}; found {list(frame.columns)}")
    if frame.empty:
        return OrdersIndex(np.zeros(0, np.uint64), np.zeros(0, np.int64)), {"rows_in": len(rejected), "rows_used": 0, "rows_rejected": len(rejected)}
    checked = check_order_rows(frame, policy)
    used = len(checked.keys)
    return OrdersIndex(checked.keys, checked.paid_at), {
        "rows_in": len(frame) + len(rejected),
        "rows_used": used,
        "rows_rejected": len(frame) - used + len(rejected),
    }


def flagging_metrics(truth: np.ndarray, flagged: np.ndarray, lost: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 of the flags against the truth, and the flagged against the true share of
    lost shoppers."""
    truth, flagged, lost = (np.asarray(a, dtype=bool) for a in (truth, flagged, lost))
    hits = int((truth & flagged).sum())
    n_flagged, n_truth, n_lost = int(flagged.sum()), int(truth.sum()), int(lost.sum())
    precision, recall, f1 = binary_scores(truth, flagged)
    return {
        "conversations": int(len(truth)),
        "lost_shoppers": n_lost,
        "lost_with_intent": n_truth,
        "flagged": n_flagged,
        "true_positives": hits,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "flagged_share_of_lost": n_flagged / n_lost if n_lost else 0.0,
        "true_share_of_lost": n_truth / n_lost if n_lost else 0.0,
    }


def evaluate_flagging(
    conversations: pd.DataFrame, scorer: ConversationScorer, policy: NudgePolicy, orders: OrdersIndex
) -> tuple[dict[str, Any], pd.DataFrame]:
    """`conversations`: conversation_id, buyer_id, shop_id, category, turns, expressed_purchase_intent.
    Returns the metrics (with the decisions' reasons) and one row per conversation."""
    inputs = [
        ConversationInput(str(row.conversation_id), str(row.buyer_id), str(row.shop_id), row.turns, str(row.category or "") or None)
        for row in conversations.itertuples(index=False)
    ]
    decisions = decide(inputs, scorer, policy, orders)
    table = pd.DataFrame(
        {
            "conversation_id": [d.conversation_id for d in decisions],
            "shop_id": [d.shop_id for d in decisions],
            "category": [d.category or "" for d in decisions],
            "lost": [d.lost is True for d in decisions],
            "order_unknown": [d.lost is None for d in decisions],
            "expressed_purchase_intent": conversations["expressed_purchase_intent"].astype(bool).to_numpy(),
            "purchase_score": [d.purchase_score for d in decisions],
            "flagged": [d.nudge for d in decisions],
            "reason": [d.reason for d in decisions],
        }
    )
    table["truth"] = table["lost"] & table["expressed_purchase_intent"]
    metrics = flagging_metrics(table["truth"], table["flagged"], table["lost"])
    metrics["reasons"] = dict(sorted(Counter(table["reason"]).items()))
    metrics["missed_by_policy"] = int((table["truth"] & table["reason"].isin([REASON_SKIPPED, REASON_DUPLICATE])).sum())
    metrics["threshold"] = policy.threshold(scorer)
    metrics["by_category"] = {
        str(category): flagging_metrics(part["truth"], part["flagged"], part["lost"])
        for category, part in table.groupby("category", sort=True)
        if category
    }
    return metrics, table
