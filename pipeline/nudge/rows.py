"""The one check of chat turns and of order rows, shared by the batch job, the service and training:
what is unusable gets a reason (the batch job quarantines it), what is usable is put in time order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import ROLES
from pipeline.conversation import Turn
from pipeline.nudge.orders import buyer_shop_keys
from pipeline.nudge.policy import NudgePolicy
from pipeline.times import MISSING_TIME, parse_times

UNREADABLE_TIME = "unparseable sent_at"


@dataclass(frozen=True)
class CheckedTurns:
    roles: np.ndarray  # canonical role names ('' where unknown)
    times: np.ndarray  # epoch ms, MISSING_TIME where absent or unreadable
    reasons: np.ndarray  # object: None for a usable turn, else why it cannot be used


def is_blank(values: Sequence[Any] | pd.Series) -> np.ndarray:
    """Missing, NaN/NaT or only white space."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if pd.api.types.is_datetime64_any_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return series.isna().to_numpy()
    return (series.isna() | (series.astype(str).str.strip() == "")).to_numpy()


def check_turns(
    roles: Sequence[Any] | pd.Series,
    texts: Sequence[Any] | pd.Series,
    sent_at: Sequence[Any] | pd.Series,
    policy: NudgePolicy,
    *,
    time_required: bool,
) -> CheckedTurns:
    """The one check of chat turns, shared by the batch job (every row of an export needs a time) and the
    live service and training (turns without a time are kept, in input order): a turn is unusable with a
    missing role or text, an unknown role, a time that is given but unreadable (or missing when required),
    or text damaged by a wrong encoding (U+FFFD). The first failing check is the reason."""
    n = len(roles)
    reasons = np.full(n, None, dtype=object)
    role_values = np.asarray(roles.to_numpy(object) if isinstance(roles, pd.Series) else list(roles), dtype=object).reshape(n)
    text_values = pd.Series(texts.to_numpy(object) if isinstance(texts, pd.Series) else list(texts), dtype=object)

    def reject(mask: np.ndarray, reason) -> None:
        for i in np.flatnonzero(mask & (reasons == None)):  # noqa: E711 (element-wise)
            reasons[i] = reason(i) if callable(reason) else reason

    time_blank = is_blank(sent_at)
    reject(is_blank(role_values), "missing role")
    reject(is_blank(text_values), "missing text")
    if time_required:
        reject(time_blank, "missing sent_at")
    canonical = normalize_roles(role_values, policy) if n else np.zeros(0, dtype=object)
    reject(canonical == "", lambda i: f"unknown role {role_values[i]!r}")
    times = parse_times(sent_at, policy.tz, policy.time_range) if n else np.zeros(0, dtype=np.int64)
    shown = sent_at.to_numpy(object) if isinstance(sent_at, pd.Series) else list(sent_at)
    reject(~time_blank & (times == MISSING_TIME), lambda i: f"{UNREADABLE_TIME} {str(shown[i])!r}")
    damaged = text_values.fillna("").astype(str).str.contains("\ufffd", regex=False).to_numpy(dtype=bool)
    reject(damaged, "bad encoding (U+FFFD in text)")
    return CheckedTurns(canonical, times, reasons)


def normalize_roles(values: Sequence[Any], policy: NudgePolicy) -> np.ndarray:
    """Role names mapped through the aliases; unknown roles become ''."""
    series = pd.Series(np.asarray(values, dtype=object)).astype(str).str.strip().str.lower()
    aliases = dict(policy.role_aliases) or {role: role for role in ROLES}
    return series.map(aliases).fillna("").to_numpy(dtype=object)


def usable_turns(turns: Sequence[Turn], policy: NudgePolicy) -> tuple[list[str], list[str], np.ndarray]:
    """Roles, texts and times of the turns `check_turns` keeps (as the batch job would), in time order
    (input order on ties). Turns without any sent_at are kept (live chats), and then the input order stands."""
    texts = [_turn_text(t) for t in turns]
    checked = check_turns([t.role for t in turns], texts, [t.sent_at for t in turns], policy, time_required=False)
    index = np.flatnonzero(checked.reasons == None)  # noqa: E711
    kept_times = checked.times[index]
    if len(index) and not (kept_times == MISSING_TIME).any():
        index = index[np.argsort(kept_times, kind="stable")]
    return [str(checked.roles[i]) for i in index], [texts[i] for i in index], checked.times[index]


def lay_flat(conversations: Sequence[Sequence[Turn]], policy: NudgePolicy) -> tuple[list[str], list[str], list[int], list[np.ndarray]]:
    """Roles, texts and conversation starts of the usable turns, and each conversation's times: what
    `usable_turns` gives conversation by conversation, with every turn checked in one `check_turns` call
    (per-conversation calls spent most of training in pandas overhead)."""
    turns = [turn for conversation in conversations for turn in conversation]
    sizes = np.fromiter((len(conversation) for conversation in conversations), dtype=np.int64, count=len(conversations))
    texts_in = [_turn_text(t) for t in turns]
    checked = check_turns([t.role for t in turns], texts_in, [t.sent_at for t in turns], policy, time_required=False)
    kept = np.flatnonzero(checked.reasons == None)  # noqa: E711
    conversation_of = np.repeat(np.arange(len(conversations)), sizes)[kept]
    kept_times = checked.times[kept]
    # a conversation is put in time order only when every kept turn has a time; otherwise input order stands
    untimed = np.zeros(len(conversations), dtype=bool)
    untimed[conversation_of[kept_times == MISSING_TIME]] = True
    sort_key = np.where(untimed[conversation_of], kept, kept_times)
    order = kept[np.lexsort((kept, sort_key, conversation_of))]
    counts = np.bincount(conversation_of, minlength=len(conversations))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
    ordered_times = checked.times[order]
    times = [ordered_times[starts[c] : starts[c + 1]] for c in range(len(conversations))]
    return [str(r) for r in checked.roles[order]], [texts_in[i] for i in order], starts, times


def _turn_text(turn: Turn) -> str:
    return turn.text if isinstance(turn.text, str) else ("" if turn.text is None else str(turn.text))


ORDER_COLUMNS = ("buyer_id", "shop_id", "paid_at")  # what an orders table must have (order_id is optional)


@dataclass(frozen=True)
class CheckedOrders:
    keys: np.ndarray  # buyer+shop keys of the usable orders (`buyer_shop_keys`)
    paid_at: np.ndarray  # their payment times, epoch ms
    reasons: np.ndarray  # object, one per input row: None for a usable order, else why not


def check_order_rows(frame: pd.DataFrame, policy: NudgePolicy) -> CheckedOrders:
    """The one check of order rows (the flag job and the training-time flag evaluation): buyer, shop and
    a readable paid_at are required."""
    values = {name: frame[name].astype(object).where(frame[name].notna(), None) for name in ORDER_COLUMNS}
    paid_source = frame["paid_at"] if pd.api.types.is_datetime64_any_dtype(frame["paid_at"].dtype) else values["paid_at"].map(
        lambda v: v if v is None or isinstance(v, str) else str(v)
    )
    paid = parse_times(paid_source, policy.tz, policy.time_range)
    reasons = np.full(len(frame), None, dtype=object)
    for name in ORDER_COLUMNS:
        reasons[is_blank(values[name]) & (reasons == None)] = f"missing {name}"  # noqa: E711
    reasons[(paid == MISSING_TIME) & (reasons == None)] = "unparseable paid_at"  # noqa: E711
    good = reasons == None  # noqa: E711
    ids = {name: values[name][good].map(lambda v: str(v).strip()).to_numpy(object) for name in ("buyer_id", "shop_id")}
    return CheckedOrders(buyer_shop_keys(ids["buyer_id"], ids["shop_id"]), paid[good], reasons)
