"""The decision rules: lost or not, nudge kind and text, priority, send time out of quiet hours, and one
nudge per buyer and shop per window. Vectorised over a table of conversations (batch job, Spark, service)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.nudge.orders import OrdersIndex, buyer_shop_keys
from pipeline.nudge.policy import (
    ORDERED_UNKNOWN,
    ORDERED_YES,
    REASON_FLAGGED,
    REASON_NO_INTENT,
    REASON_NOT_LOST,
    REASON_ORDER_UNKNOWN,
    REASON_SKIPPED,
    NudgePolicy,
)
from pipeline.times import MISSING_TIME, MS_PER_HOUR


def lost_status(
    buyer_ids: np.ndarray,
    shop_ids: np.ndarray,
    first_ms: np.ndarray,
    last_ms: np.ndarray,
    ordered: np.ndarray,
    policy: NudgePolicy,
    orders_index: OrdersIndex | None,
) -> np.ndarray:
    """1 lost, 0 not lost, -1 unknown. With an orders index: lost when no order by that buyer at that shop
    was paid from the attribution start to the last message + window (inclusive); else the `ordered` flag."""
    ordered = np.asarray(ordered, dtype=np.int8)
    if orders_index is None:
        return np.where(ordered == ORDERED_UNKNOWN, -1, np.where(ordered == ORDERED_YES, 0, 1)).astype(np.int8)
    last_ms = np.asarray(last_ms, dtype=np.int64)
    start = np.asarray(first_ms if policy.attribution_start == "first_message" else last_ms, dtype=np.int64)
    end = np.where(last_ms == MISSING_TIME, MISSING_TIME, last_ms + policy.window_ms)
    paid = orders_index.any_paid_between(buyer_shop_keys(buyer_ids, shop_ids), start, end)
    status = np.where(paid, 0, 1).astype(np.int8)
    status[(start == MISSING_TIME) | (last_ms == MISSING_TIME)] = -1
    return status


def choose_nudges(open_concern: np.ndarray, policy: NudgePolicy) -> tuple[np.ndarray, np.ndarray]:
    """Nudge kind per conversation (coupon for price, shipping promise for shipping time, ...) and its text."""
    kinds = np.array([policy.nudges.get(c, policy.default_nudge) for c in open_concern], dtype=object)
    texts = np.array([policy.nudge_texts.get(k, policy.nudge_texts.get(policy.default_nudge, "")) for k in kinds], dtype=object)
    return kinds, texts


def priorities(scores: np.ndarray, last_turn_is_buyer: np.ndarray, policy: NudgePolicy) -> np.ndarray:
    """1 (send first) to 3: by purchase score; a buyer left without a reply moves one level up."""
    scores = np.round(np.asarray(scores, dtype=np.float64), 4)
    level = np.where(scores >= policy.priority_high, 1, np.where(scores >= policy.priority_medium, 2, 3))
    if policy.unanswered_boost:
        level = np.where(np.asarray(last_turn_is_buyer, dtype=bool), np.maximum(level - 1, 1), level)
    return level.astype(np.int8)


def send_times(last_ms: np.ndarray, policy: NudgePolicy) -> np.ndarray:
    """When the nudge may go out: the last message + delay (default: when the window closes, i.e. when the
    shopper is known to be lost), moved out of quiet hours."""
    last_ms = np.asarray(last_ms, dtype=np.int64)
    delay_hours = policy.window_hours if policy.send_delay_hours is None else policy.send_delay_hours
    base = np.where(last_ms == MISSING_TIME, MISSING_TIME, last_ms + int(round(delay_hours * MS_PER_HOUR)))
    return next_allowed_time(base, policy)


def next_allowed_time(times_ms: np.ndarray, policy: NudgePolicy) -> np.ndarray:
    """The earliest moment at or after each time that is outside quiet hours (local time in `policy.tz`),
    rounded up to the minute. Quiet hours are [start, end): 22:00 is quiet, 08:00 is allowed."""
    times_ms = np.asarray(times_ms, dtype=np.int64)
    result = np.full(len(times_ms), MISSING_TIME, dtype=np.int64)
    known = times_ms != MISSING_TIME
    if not known.any():
        return result
    minute = 60_000
    ceiled = -(-times_ms[known] // minute) * minute
    if policy.quiet_start_ms is None:
        result[known] = ceiled
        return result
    local = pd.DatetimeIndex(pd.to_datetime(ceiled, unit="ms", utc=True)).tz_convert(policy.tz)
    midnight = local.normalize()
    since_midnight = (local - midnight).to_numpy().astype("timedelta64[ms]").astype(np.int64)
    start, end = policy.quiet_start_ms, policy.quiet_end_ms
    if start < end:
        quiet = (since_midnight >= start) & (since_midnight < end)
        day_shift = np.zeros(len(local), dtype=np.int64)
    else:  # crosses midnight: 22:00-08:00
        late = since_midnight >= start
        quiet = late | (since_midnight < end)
        day_shift = late.astype(np.int64)
    target_local = midnight + pd.to_timedelta(day_shift, unit="D") + pd.Timedelta(milliseconds=end)
    target = target_local.tz_convert("UTC").tz_localize(None).as_unit("ms").to_numpy().view(np.int64)
    result[known] = np.where(quiet, target, ceiled)
    return result


def decide_table(conversations: pd.DataFrame, policy: NudgePolicy, threshold: float, orders_index: OrdersIndex | None) -> pd.DataFrame:
    """Adds lost, expressed_purchase_intent, reason, candidate, suggested_nudge, nudge_text, priority, send_after_ms.

    `conversations` has one row per conversation: buyer_id, shop_id, first_ms, last_ms, ordered (-1/0/1) and
    the `score_flat` columns. `candidate` is before the one-per-window rule (`apply_one_per_window`)."""
    frame = conversations.copy()
    frame["purchase_score"] = np.round(frame["purchase_score"].to_numpy(dtype=np.float64), 6)
    lost = lost_status(
        frame["buyer_id"].to_numpy(object), frame["shop_id"].to_numpy(object), frame["first_ms"].to_numpy(np.int64),
        frame["last_ms"].to_numpy(np.int64), frame["ordered"].to_numpy(np.int8), policy, orders_index,
    )
    expressed = frame["purchase_score"].to_numpy() >= threshold
    skipped = frame["has_skip_intent"].to_numpy(dtype=bool)
    reason = np.where(
        lost == -1, REASON_ORDER_UNKNOWN,
        np.where(lost == 0, REASON_NOT_LOST, np.where(~expressed, REASON_NO_INTENT, np.where(skipped, REASON_SKIPPED, REASON_FLAGGED))),
    ).astype(object)
    kinds, texts = choose_nudges(frame["open_concern"].to_numpy(object), policy)
    frame["lost"] = lost
    frame["expressed_purchase_intent"] = expressed
    frame["reason"] = reason
    frame["candidate"] = reason == REASON_FLAGGED
    frame["suggested_nudge"] = kinds
    frame["nudge_text"] = texts
    frame["priority"] = priorities(frame["purchase_score"].to_numpy(), frame["last_turn_is_buyer"].to_numpy(bool), policy)
    frame["send_after_ms"] = send_times(frame["last_ms"].to_numpy(np.int64), policy)
    return frame


def apply_one_per_window(candidates: pd.DataFrame, policy: NudgePolicy) -> np.ndarray:
    """Which candidates keep their nudge: per buyer and shop, in send-time order (conversation_id breaks ties),
    a nudge is kept when it goes out at least one window after the previous kept one."""
    keep = np.ones(len(candidates), dtype=bool)
    if not policy.one_per_buyer_shop or len(candidates) < 2:
        return keep
    frame = pd.DataFrame(
        {
            "buyer": candidates["buyer_id"].to_numpy(object),
            "shop": candidates["shop_id"].to_numpy(object),
            "t": candidates["send_after_ms"].to_numpy(np.int64),
            "cid": candidates["conversation_id"].to_numpy(object),
            "pos": np.arange(len(candidates)),
        }
    ).sort_values(["buyer", "shop", "t", "cid"], kind="mergesort")
    same = (frame["buyer"].to_numpy() == np.roll(frame["buyer"].to_numpy(), 1)) & (frame["shop"].to_numpy() == np.roll(frame["shop"].to_numpy(), 1))
    same[0] = False
    if not same.any():
        return keep
    times, positions = frame["t"].to_numpy(), frame["pos"].to_numpy()
    window = policy.window_ms
    last_kept = MISSING_TIME
    for i in range(len(frame)):
        if not same[i]:
            last_kept = times[i]
            continue
        if times[i] == MISSING_TIME or last_kept == MISSING_TIME or times[i] - last_kept >= window:
            last_kept = times[i]
        else:
            keep[positions[i]] = False
    return keep
