"""The decision rules of pipeline/nudge/, shared by the batch job and the service."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.conversation import Turn
from pipeline.config import FlagSettingsError
from pipeline.nudge import ConversationInput, NudgePolicy, OrdersIndex, decide
from pipeline.nudge.features import features_from_turns, predict_messages, score_flat
from pipeline.nudge.policy import (
    REASON_DUPLICATE,
    REASON_FLAGGED,
    REASON_NO_INTENT,
    REASON_NOT_LOST,
    REASON_ORDER_UNKNOWN,
    REASON_SKIPPED,
)
from pipeline.nudge.rows import check_turns
from pipeline.nudge.rules import apply_one_per_window, choose_nudges, lost_status, next_allowed_time, priorities
from pipeline.times import MISSING_TIME, format_times, parse_times

from .builders import PHRASES


@pytest.fixture()
def policy() -> NudgePolicy:
    from pipeline.config import load_config

    return NudgePolicy.from_config(load_config(overrides={"paths.data": "x"}).flag)


def ms(text: str, policy: NudgePolicy) -> int:
    return int(parse_times([text], policy.tz, policy.time_range)[0])


# --- lost or not ------------------------------------------------------------------------------------


def _lost(policy, orders, buyer="b", shop="s", first="2024-05-01T10:00:00+08:00", last="2024-05-01T10:30:00+08:00"):
    index = OrdersIndex.from_arrays([o[0] for o in orders], [o[1] for o in orders], parse_times([o[2] for o in orders], policy.tz, policy.time_range))
    status = lost_status(
        np.array([buyer], dtype=object), np.array([shop], dtype=object), np.array([ms(first, policy)]),
        np.array([ms(last, policy)]), np.array([-1], dtype=np.int8), policy, index,
    )
    return int(status[0])


@pytest.mark.parametrize(
    ("paid_at", "lost"),
    [
        ("2024-05-04T10:30:00+08:00", 0),  # exactly 72h after the last message: inside the window
        ("2024-05-04T10:30:01+08:00", 1),  # 72h + 1s: outside
        ("2024-05-01T02:30:00Z", 0),  # the same instant as the last message, written in UTC
        ("2024-05-01T09:59:59+08:00", 1),  # before the conversation
        ("2024-05-01T10:15:00+08:00", 0),  # paid during the conversation
    ],
)
def test_lost_at_window_edges(policy, paid_at, lost):
    assert _lost(policy, [("b", "s", paid_at)]) == lost


def test_orders_at_another_shop_or_by_another_buyer_do_not_count(policy):
    orders = [("b", "other-shop", "2024-05-02T10:00:00+08:00"), ("other-buyer", "s", "2024-05-02T10:00:00+08:00")]
    assert _lost(policy, orders) == 1
    assert _lost(policy, orders, shop="other-shop") == 0
    assert _lost(policy, [], shop="s") == 1


def test_attribution_from_the_last_message(policy):
    from dataclasses import replace

    during = [("b", "s", "2024-05-01T10:15:00+08:00")]
    assert _lost(replace(policy, attribution_start="last_message"), during) == 1


def test_window_setting_changes_the_edge(policy):
    from dataclasses import replace

    orders = [("b", "s", "2024-05-02T10:30:00+08:00")]  # 24h after the last message
    assert _lost(replace(policy, window_hours=24), orders) == 0
    assert _lost(replace(policy, window_hours=23.5), orders) == 1


def test_orders_index_many_keys_and_times_match_a_plain_scan(policy):
    rng = np.random.default_rng(0)
    buyers = rng.integers(0, 50, 2000).astype(str)
    shops = rng.integers(0, 5, 2000).astype(str)
    paid = rng.integers(0, 10**9, 2000).astype(np.int64)
    index = OrdersIndex.from_arrays(buyers, shops, paid)
    qb, qs = rng.integers(0, 60, 500).astype(str), rng.integers(0, 6, 500).astype(str)
    start = rng.integers(-10**8, 10**9, 500).astype(np.int64)
    end = start + rng.integers(0, 10**8, 500)
    from pipeline.nudge.orders import buyer_shop_keys

    got = index.any_paid_between(buyer_shop_keys(qb, qs), start, end)
    expected = [bool(((buyers == b) & (shops == s) & (paid >= lo) & (paid <= hi)).any()) for b, s, lo, hi in zip(qb, qs, start, end)]
    assert got.tolist() == expected


def test_ordered_flag_without_orders(policy):
    status = lost_status(np.array(["b"] * 3, dtype=object), np.array(["s"] * 3, dtype=object), np.zeros(3, np.int64),
                         np.zeros(3, np.int64), np.array([1, 0, -1], dtype=np.int8), policy, None)
    assert status.tolist() == [0, 1, -1]


# --- time -------------------------------------------------------------------------------------------


def test_parse_times_reads_offsets_and_local_times(policy):
    values = ["2024-05-01T10:00:00+08:00", "2024-05-01 10:00:00", "2024/05/01 10:00", "2024-05-01T02:00:00Z",
              "2024-05-01T10:00:00+0800", "garbage", None, ""]
    got = parse_times(values, policy.tz, policy.time_range)
    assert len(set(got[:5].tolist())) == 1
    assert got[5:].tolist() == [MISSING_TIME] * 3


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2024-05-01T21:59:00+08:00", "2024-05-01T21:59:00+08:00"),
        ("2024-05-01T21:59:30+08:00", "2024-05-02T08:00:00+08:00"),  # rounded up to 22:00: quiet
        ("2024-05-01T22:00:00+08:00", "2024-05-02T08:00:00+08:00"),
        ("2024-05-01T23:59:00+08:00", "2024-05-02T08:00:00+08:00"),  # crossing midnight
        ("2024-05-02T00:00:00+08:00", "2024-05-02T08:00:00+08:00"),
        ("2024-05-02T07:59:59+08:00", "2024-05-02T08:00:00+08:00"),
        ("2024-05-02T08:00:00+08:00", "2024-05-02T08:00:00+08:00"),
        ("2024-05-01T15:00:00Z", "2024-05-02T08:00:00+08:00"),  # 23:00 local
        ("2024-12-31T23:00:00+08:00", "2025-01-01T08:00:00+08:00"),
    ],
)
def test_quiet_hours(policy, at, expected):
    assert format_times(next_allowed_time(np.array([ms(at, policy)]), policy), policy.tz) == [expected]


def test_quiet_hours_within_a_day_and_none(policy):
    from dataclasses import replace

    lunch = replace(policy, quiet_start_ms=12 * 3_600_000, quiet_end_ms=14 * 3_600_000)
    times = np.array([ms("2024-05-01T12:30:00+08:00", policy), ms("2024-05-01T23:00:00+08:00", policy)])
    assert format_times(next_allowed_time(times, lunch), policy.tz) == ["2024-05-01T14:00:00+08:00", "2024-05-01T23:00:00+08:00"]
    assert NudgePolicy.from_config({"quiet_hours": None}).quiet_start_ms is None
    assert next_allowed_time(np.array([MISSING_TIME]), policy).tolist() == [MISSING_TIME]


def test_bad_settings_name_the_key():
    with pytest.raises(FlagSettingsError, match="flag.quiet_hours"):
        NudgePolicy.from_config({"quiet_hours": ["25:00", "08:00"]})
    with pytest.raises(FlagSettingsError, match="flag.windw_hours"):
        NudgePolicy.from_config({"windw_hours": 3})


# --- policy -----------------------------------------------------------------------------------------


def _candidates(rows, policy):
    return pd.DataFrame(
        {
            "conversation_id": [r[0] for r in rows],
            "buyer_id": [r[1] for r in rows],
            "shop_id": [r[2] for r in rows],
            "send_after_ms": [ms(r[3], policy) for r in rows],
        }
    )


def test_one_nudge_per_buyer_per_shop_per_window(policy):
    rows = [
        ("a", "b1", "s1", "2024-05-04T10:00:00+08:00"),
        ("b", "b1", "s1", "2024-05-05T10:00:00+08:00"),  # 24h later: suppressed
        ("c", "b1", "s1", "2024-05-07T10:00:00+08:00"),  # exactly 72h after the kept one: kept
        ("d", "b1", "s2", "2024-05-05T10:00:00+08:00"),  # another shop: kept
        ("e", "b2", "s1", "2024-05-05T10:00:00+08:00"),  # another buyer: kept
        ("f", "b1", "s1", "2024-05-08T10:00:00+08:00"),  # 24h after c: suppressed
    ]
    assert apply_one_per_window(_candidates(rows, policy), policy).tolist() == [True, False, True, True, True, False]


def test_one_per_window_can_be_switched_off(policy):
    from dataclasses import replace

    rows = [("a", "b1", "s1", "2024-05-04T10:00:00+08:00"), ("b", "b1", "s1", "2024-05-04T11:00:00+08:00")]
    assert apply_one_per_window(_candidates(rows, policy), replace(policy, one_per_buyer_shop=False)).all()


def test_nudge_kinds_follow_the_open_concern(policy):
    kinds, texts = choose_nudges(np.array(["price_promo", "shipping_time", "stock", "size_fit", "product_spec", ""], dtype=object), policy)
    assert kinds.tolist() == ["coupon", "shipping_promise", "restock_alert", "size_help", "reminder", "reminder"]
    assert all(texts) and "优惠券" in texts[0]


def test_priority_levels_and_unanswered_boost(policy):
    got = priorities(np.array([0.95, 0.8, 0.5, 0.8, 0.5]), np.array([False, False, False, True, True]), policy)
    assert got.tolist() == [1, 2, 3, 1, 2]


# --- scoring and decide() ---------------------------------------------------------------------------


def test_deduplicated_predictions_equal_plain_predict(flag_scorer):
    texts = [p for phrases in PHRASES.values() for p, _ in phrases] * 3 + ["", "在吗", "我要了"]
    plain = flag_scorer.predictor.predict(texts)
    fast = predict_messages(flag_scorer.predictor, texts, batch_size=7)
    assert fast["intent"].tolist() == plain["intent"].tolist()
    assert np.array_equal(fast["purchase_score"], plain["purchase_score"].to_numpy())
    assert np.array_equal(fast["intent_confidence"], plain["intent_confidence"].to_numpy())


def test_flat_scores_equal_the_conversation_scorer(flag_scorer, policy):
    """score_flat's fast path must give exactly the features training uses, and their scores."""
    conversations = [
        [Turn("buyer", "在吗"), Turn("agent", "在的"), Turn("buyer", "有货我就要"), Turn("buyer", "什么时候发货")],
        [Turn("agent", "您好")],
        [Turn("buyer", "收到是坏的 给你差评")],
        [Turn("buyer", "能便宜点吗"), Turn("bot", "亲 可以领券"), Turn("buyer", "好的谢谢"), Turn("agent", "不客气")],
    ]
    expected_scores = flag_scorer.score_features(features_from_turns(conversations, flag_scorer, policy))
    roles = np.array([t.role for c in conversations for t in c], dtype=object)
    texts = np.array([t.text for c in conversations for t in c], dtype=object)
    starts = np.cumsum([0] + [len(c) for c in conversations])
    scored, stats = score_flat(roles, texts, starts, flag_scorer, policy)
    assert np.array_equal(scored["purchase_score"].to_numpy(), expected_scores)
    assert scored["has_skip_intent"].tolist() == [False, False, True, False]
    assert scored["last_turn_is_buyer"].tolist() == [True, False, True, False]
    assert scored["evidence"].tolist()[1] == ""
    assert stats["buyer_messages"] == 6


def test_decide_flags_like_the_rules_say(flag_scorer, policy):
    from dataclasses import replace

    policy = replace(policy, min_score=0.0)
    t = "2024-05-01T10:00:00+08:00"
    conversations = [
        ConversationInput("lost", "b1", "s1", [Turn("buyer", "能便宜点吗 便宜点我就买了 13812345678", t)], "apparel", ordered=False),
        ConversationInput("bought", "b2", "s1", [Turn("buyer", "我要了", t)], ordered=True),
        ConversationInput("complained", "b3", "s1", [Turn("buyer", "我要了", t), Turn("buyer", "收到是坏的 质量太差 给你差评", t)], ordered=False),
        ConversationInput("unknown", "b4", "s1", [Turn("buyer", "我要了", t)]),
        ConversationInput("again", "b1", "s1", [Turn("buyer", "我要了", "2024-05-01T12:00:00+08:00")], ordered=False),
    ]
    decisions = decide(conversations, flag_scorer, policy)
    assert [d.reason for d in decisions] == [REASON_FLAGGED, REASON_NOT_LOST, REASON_SKIPPED, REASON_ORDER_UNKNOWN, REASON_DUPLICATE]
    first = decisions[0]
    assert first.nudge and first.lost is True and first.category == "apparel"
    assert first.suggested_nudge == "coupon" and first.open_concern == "price_promo"
    assert "13812345678" not in first.evidence and "[电话x]" in first.evidence
    assert first.send_after == "2024-05-04T10:00:00+08:00"
    assert decisions[3].lost is None and not decisions[3].nudge


def test_decide_threshold_and_orders_index(flag_scorer, policy):
    t = "2024-05-01T10:00:00+08:00"
    orders = OrdersIndex.from_arrays(["b2"], ["s1"], parse_times(["2024-05-02T10:00:00+08:00"], policy.tz, policy.time_range))
    conversations = [
        ConversationInput("chat", "b1", "s1", [Turn("buyer", "在吗", t), Turn("buyer", "哈哈", t)]),
        ConversationInput("paid", "b2", "s1", [Turn("buyer", "我要了", t)], ordered=False),  # the index wins
    ]
    decisions = decide(conversations, flag_scorer, policy, orders_index=orders)
    assert [d.reason for d in decisions] == [REASON_NO_INTENT, REASON_NOT_LOST]
    assert decide([], flag_scorer, policy) == []


def test_a_partial_flag_section_decides_like_the_default_config():
    """A partial `flag:` section is laid over configs/default.yaml's: the rest decides as the default does."""
    from pipeline.config import load_config
    from pipeline.config import load_flag_settings

    default = load_config().flag
    partial = load_flag_settings({"min_score": 0.5})
    assert partial.min_score == 0.5
    assert partial.model_copy(update={"min_score": default.min_score}) == default


def test_share_warnings_bounds():
    from pipeline.config import ShareAlertSettings
    from pipeline.nudge.policy import share_warnings

    alert = ShareAlertSettings(expected=0.2, factor=2.0, min_lost=100)
    assert share_warnings(20, 100, alert) == [] and share_warnings(10, 100, alert) == [] and share_warnings(40, 100, alert) == []
    assert "below" in share_warnings(9, 100, alert)[0] and "above" in share_warnings(41, 100, alert)[0]
    assert share_warnings(0, 99, alert) == []


def test_training_and_serving_see_the_same_conversation_features(flag_scorer, policy):
    """One chat as exported (Chinese role names, turns out of time order, blank turns) and as the service
    receives it cleaned up: the same features and score on the training path and the serving path."""
    at = "2024-05-01T10:0{}:00+08:00".format
    exported = [
        Turn("客服", "亲 在的", at(1)), Turn("买家", "有货我就要", at(2)), Turn("买家", "  ", at(3)),
        Turn("买家", "在吗", at(0)), Turn("机器人", "您好 请问有什么可以帮您", at(4)),
    ]
    clean = [Turn("buyer", "在吗", at(0)), Turn("agent", "亲 在的", at(1)), Turn("buyer", "有货我就要", at(2)),
             Turn("bot", "您好 请问有什么可以帮您", at(4))]
    trained, served = features_from_turns([exported, clean], flag_scorer, policy)
    assert trained == served
    assert trained["n_buyer_log"] == pytest.approx(np.log1p(2)) and trained["last_turn_is_buyer"] == 0.0
    decisions = decide([ConversationInput("c", "b", "s", exported), ConversationInput("c2", "b", "s", clean)], flag_scorer, policy)
    assert decisions[0].purchase_score == decisions[1].purchase_score == pytest.approx(flag_scorer.score_features([trained])[0], abs=1e-6)


def test_one_date_rule_for_every_value_whatever_its_neighbours():
    """Out-of-range years, now/today and words are not times; Chinese and slash forms and epoch values are;
    a value is read the same alone or among others (main's reading depended on the chunk)."""
    policy = NudgePolicy.from_config(None)
    tz, window = policy.tz, policy.time_range
    expected = parse_times(["2024-09-02T05:00:00+08:00"], tz, window)[0]
    for form in ("2024-09-02 05:00", "2024/9/2 5:00", "2024年9月2日 05:00", "2024.9.2 05:00:00", "1725224400", "1725224400000"):
        assert parse_times([form], tz, window)[0] == expected, form
    for bad in ("9999-12-31", "0001-01-01 10:00", "now", "today", "下午三点", "2024-13-01", ""):
        assert parse_times([bad], tz, window)[0] == MISSING_TIME, bad
    mixed = ["2024/9/2 5:00", "9999-12-31T00:00:00+08:00", "now", "2024-09-02T05:00:00+08:00", "1725224400"]
    together = parse_times(mixed, tz, window)
    assert together.tolist() == [parse_times([v], tz, window)[0] for v in mixed]


def test_the_date_range_is_the_configs():
    """flag.time_range bounds every path: a shop replaying an old archive widens it; a typo is a config error."""
    narrow = NudgePolicy.from_config({"time_range": ["2024-01-01", "2025-01-01"]})
    wide = NudgePolicy.from_config({"time_range": ["1990-01-01", "2100-01-01"]})
    values = ["2023-12-31T23:00:00+08:00", "2024-06-01 10:00", "1995-03-01 10:00", "2025-01-01T08:00:00+08:00"]
    assert (parse_times(values, narrow.tz, narrow.time_range) == MISSING_TIME).tolist() == [True, False, True, True]
    assert (parse_times(values, wide.tz, wide.time_range) == MISSING_TIME).tolist() == [False, False, False, False]
    checked = check_turns(["buyer"] * 2, ["在吗"] * 2, ["1995-03-01 10:00", "2024-06-01 10:00"], narrow, time_required=True)
    assert checked.reasons[0].startswith("unparseable sent_at") and checked.reasons[1] is None
    for bad in (["2025-01-01", "2024-01-01"], ["0001-01-01", "2100-01-01"], ["yesterday", "2100-01-01"]):
        with pytest.raises(FlagSettingsError, match="time_range"):
            NudgePolicy.from_config({"time_range": bad})
