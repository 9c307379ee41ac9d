"""The nudge list evaluated against the truth (lost AND expressed purchase intent) on held-out conversations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.conversation import ConversationScorer, Turn
from pipeline.training.flag_eval import evaluate_flagging, flagging_metrics
from pipeline.inference import Predictor
from pipeline.config import load_flag_settings
from pipeline.nudge import NudgePolicy, OrdersIndex
from pipeline.times import parse_times


def test_flagging_metrics_count_what_they_say():
    truth = np.array([1, 1, 0, 0, 1, 0], bool)
    flagged = np.array([1, 0, 1, 0, 1, 0], bool)
    lost = np.array([1, 1, 1, 1, 1, 0], bool)
    m = flagging_metrics(truth, flagged, lost)
    assert (m["true_positives"], m["flagged"], m["lost_with_intent"], m["lost_shoppers"]) == (2, 3, 3, 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    assert m["flagged_share_of_lost"] == pytest.approx(3 / 5) and m["true_share_of_lost"] == pytest.approx(3 / 5)
    empty = flagging_metrics(np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, bool))
    assert empty["precision"] == 0.0 and empty["flagged_share_of_lost"] == 0.0


def test_training_evaluates_the_nudge_list_on_test_conversations(corpus_training):
    result, _ = corpus_training
    flagging = result.metrics.get("flagging")
    if flagging is None:
        pytest.skip("the bundled corpus has no conversations or orders")
    assert flagging["conversations"] == result.metrics["conversation"]["sizes"]["test"]
    assert sum(flagging["reasons"].values()) == flagging["conversations"]
    assert flagging["flagged"] == flagging["reasons"].get("flagged", 0)
    assert flagging["precision"] == pytest.approx(flagging["true_positives"] / flagging["flagged"])
    assert flagging["flagged_share_of_lost"] == pytest.approx(flagging["flagged"] / flagging["lost_shoppers"])
    # Minimum functionality on the (flattering) corpus: most lost shoppers with intent are found, few others.
    assert flagging["f1"] >= 0.7
    assert abs(flagging["flagged_share_of_lost"] - flagging["true_share_of_lost"]) < 0.05
    assert {"conversation_id", "lost", "flagged", "reason"} <= set(result.conversation_test.columns)
    assert "turns" not in result.conversation_test.columns


def _chat(cid: str, buyer: str, texts: list[str]) -> dict:
    turns = []
    for i, text in enumerate(texts):
        turns.append(Turn("buyer", text, f"2026-11-02T10:{2 * i:02d}:00+08:00"))
        turns.append(Turn("agent", "亲 在的", f"2026-11-02T10:{2 * i + 1:02d}:00+08:00"))
    return {"conversation_id": cid, "buyer_id": buyer, "shop_id": "s1", "category": "apparel", "turns": turns}


def test_paid_skipped_and_lost_shoppers_are_told_apart(corpus_bundle_dir):
    from pipeline.bundle import load_bundle

    settings = load_flag_settings({"min_score": 0.5})
    policy = NudgePolicy.from_settings(settings)
    scorer = ConversationScorer(Predictor(load_bundle(corpus_bundle_dir)))
    wants = ["在吗", "这款M码有货吗", "有货的话我现在就拍 马上付款"]
    frame = pd.DataFrame(
        [
            _chat("lost", "b1", wants),
            _chat("paid", "b2", wants),
            _chat("complained", "b3", [*wants, "你们态度太差了 我要投诉"]),
            _chat("browsing", "b4", ["在吗", "好的谢谢"]),
        ]
    )
    frame["expressed_purchase_intent"] = [1, 1, 1, 0]
    orders = OrdersIndex.from_arrays(["b2"], ["s1"], parse_times(["2026-11-02T12:00:00+08:00"], policy.tz, policy.time_range))
    metrics, table = evaluate_flagging(frame, scorer, policy, orders)
    by_id = table.set_index("conversation_id")
    assert by_id.loc["lost", "flagged"] and by_id.loc["lost", "truth"]
    assert not by_id.loc["paid", "lost"] and not by_id.loc["paid", "flagged"] and by_id.loc["paid", "reason"] == "not_lost"
    assert by_id.loc["complained", "truth"] and by_id.loc["complained", "reason"] == "complaint_or_refund"
    assert not by_id.loc["browsing", "flagged"]
    assert (metrics["true_positives"], metrics["lost_with_intent"], metrics["missed_by_policy"]) == (1, 2, 1)
