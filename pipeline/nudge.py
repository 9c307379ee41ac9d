"""Lost-shopper decisions (催拍): lost or not, nudge choice and text, policy, priority.

The batch job (`buyer-intent flag`, pipeline/flag.py) and the service (`/score_conversation`, `/flag`)
both decide through this module, so one conversation gets the same decision wherever it is judged.

API for callers (everything else here is the shared machinery behind it):

    policy = NudgePolicy.from_config(config.flag)                 # or .from_config(config.flag, window_hours=48)
    scorer = ConversationScorer(Predictor(load_model(ref)))
    orders = OrdersIndex.from_arrays(buyer_ids, shop_ids, parse_times(paid_at, policy.tz))   # optional
    decisions = decide([ConversationInput(conversation_id, buyer_id, shop_id, turns, category, ordered)],
                       scorer, policy, orders_index=orders)       # -> list[Decision], same order

- `turns` are `pipeline.conversation.Turn(role, text, sent_at)`; sent_at is ISO 8601 (no offset: read in
  `policy.tz`); turns are put in time order. Roles are mapped through the configured aliases (买家 -> buyer ...).
  Turns the batch job would reject (unknown role, blank text, unparseable sent_at) are left out
  (`usable_turns`); turns without any sent_at are kept, but then lost/send_after need `ordered`/times.
- `Decision`: purchase_score (conversation level), expressed_purchase_intent, lost (True/False/None), nudge, reason
  (flagged | not_lost | no_purchase_intent | complaint_or_refund | duplicate_in_window | order_unknown),
  evidence, open_concern, suggested_nudge, nudge_text, priority (1 = first), send_after, last_message_at.
- The intent threshold is `policy.threshold(scorer)`: config `min_score`, else the model's validated one.
- Lost: with `orders_index`, no order paid by that buyer at that shop between the conversation's start
  (config `attribution_start`) and the last message + window; otherwise `ConversationInput.ordered`;
  neither known -> `lost=None`, never flagged (reason `order_unknown`).
- One nudge per buyer per shop per window is enforced within the list passed; a live sender must also
  keep its own send log across calls.
- Every text in a Decision is PII-masked (`mask_pii`).

Timestamps inside are int64 epoch milliseconds (UTC); `MISSING_TIME` (NaT's int64 value) marks unknown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline.config import ROLES, FlagSettings, FlagSettingsError, PrioritySettings, ShareAlertSettings, load_flag_settings  # noqa: F401 (re-exported)
from pipeline.conversation import BUYER, ConversationScorer, Turn, conversation_features
from pipeline.times import MS_PER_DAY, parse_clock, parse_timezone  # noqa: F401 (re-exported)
from pipeline.text import mask_pii

MISSING_TIME = np.iinfo(np.int64).min
MS_PER_HOUR = 3_600_000

# Why a conversation is or is not on the nudge list (first that applies, in this order).
REASON_ORDER_UNKNOWN = "order_unknown"
REASON_NOT_LOST = "not_lost"
REASON_NO_INTENT = "no_purchase_intent"
REASON_SKIPPED = "complaint_or_refund"
REASON_DUPLICATE = "duplicate_in_window"
REASON_FLAGGED = "flagged"

ORDERED_UNKNOWN, ORDERED_NO, ORDERED_YES = -1, 0, 1


def share_warnings(flagged: int, lost: int, alert: ShareAlertSettings) -> list[str]:
    """Warnings for the summary when the flagged share of lost shoppers is implausible."""
    if alert.expected is None or lost < alert.min_lost:
        return []
    share, low, high = flagged / lost, alert.expected / alert.factor, min(1.0, alert.expected * alert.factor)
    if low <= share <= high:
        return []
    direction = "below" if share < low else "above"
    return [
        f"flagged {share:.1%} of {lost:,} lost shoppers, {direction} the expected range {low:.0%}-{high:.0%} "
        f"(flag.share_alert): the conversation threshold may not fit these chats; check a sample of the "
        f"{'unflagged lost shoppers' if share < low else 'flagged ones'} before sending, or set flag.min_score"
    ]


@dataclass(frozen=True)
class NudgePolicy:
    """Everything a decision depends on besides the model and the orders."""

    window_hours: float = 72.0
    attribution_start: str = "first_message"
    quiet_start_ms: int | None = 22 * MS_PER_HOUR
    quiet_end_ms: int | None = 8 * MS_PER_HOUR
    tz: dt.tzinfo = dt.timezone(dt.timedelta(hours=8))
    send_delay_hours: float | None = None
    min_score: float | None = None
    skip_intents: frozenset[str] = frozenset({"complaint", "return_refund"})
    one_per_buyer_shop: bool = True
    concern_intents: frozenset[str] = frozenset()
    nudges: Mapping[str, str] = field(default_factory=dict)
    default_nudge: str = "reminder"
    nudge_texts: Mapping[str, str] = field(default_factory=dict)
    priority_high: float = 0.9
    priority_medium: float = 0.7
    unanswered_boost: bool = True
    evidence_max_chars: int = 120
    role_aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: FlagSettings) -> "NudgePolicy":
        aliases = {role: role for role in ROLES}
        for role, names in settings.roles.items():
            aliases.update({str(name).strip().lower(): role for name in names})
        quiet = settings.quiet_hours
        quiet_start, quiet_end = (parse_clock(quiet[0]), parse_clock(quiet[1])) if quiet else (None, None)
        if quiet_start is not None and quiet_start == quiet_end:
            quiet_start = quiet_end = None
        return cls(
            window_hours=settings.window_hours,
            attribution_start=settings.attribution_start,
            quiet_start_ms=quiet_start,
            quiet_end_ms=quiet_end,
            tz=parse_timezone(settings.timezone),
            send_delay_hours=settings.send_delay_hours,
            min_score=settings.min_score,
            skip_intents=frozenset(settings.skip_intents),
            one_per_buyer_shop=settings.one_per_buyer_shop,
            concern_intents=frozenset(settings.concern_intents),
            nudges=dict(settings.nudges),
            default_nudge=settings.default_nudge,
            nudge_texts=dict(settings.nudge_texts),
            priority_high=settings.priority.high,
            priority_medium=settings.priority.medium,
            unanswered_boost=settings.priority.unanswered_boost,
            evidence_max_chars=settings.evidence_max_chars,
            role_aliases=aliases,
        )

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, window_hours: float | None = None) -> "NudgePolicy":
        return cls.from_settings(load_flag_settings(section, window_hours))

    @property
    def window_ms(self) -> int:
        return int(round(self.window_hours * MS_PER_HOUR))

    def threshold(self, scorer: ConversationScorer) -> float:
        """The conversation score at which purchase intent counts as expressed."""
        return float(self.min_score) if self.min_score is not None else float(scorer.threshold)


# --- time -------------------------------------------------------------------------------------------

_OFFSET_RE = r"(?:[zZ]|[+-]\d{2}:?\d{2})$"
# Dates as shops export them: 2024-09-02T05:00:00+08:00, 2024-09-02 05:00, 2024/9/2 5:00, 2024.9.2,
# 2024年9月2日 05:00 (all rebuilt as zero-padded ISO 8601), and epoch seconds (10 digits) or ms (13).
_DATE_FORM = (
    r"^(?P<y>\d{4})[-/.年](?P<m>\d{1,2})[-/.月](?P<d>\d{1,2})[日号]?"
    r"(?:[T\s]*(?P<H>\d{1,2})[:时点](?P<M>\d{1,2})(?:[:分](?P<S>\d{1,2}(?:\.\d{1,9})?)秒?)?)?"
    r"\s*(?P<z>[zZ]|[+-]\d{2}:?\d{2})?$"
)
_EPOCH_FORM = r"^\d{10}(?:\d{3})?$"
# The one date rule of every path (batch, service, training): outside this range a time is not a time
# (9999-12-31 overflowed the window arithmetic; 0001-01-01 wrote a year-1 send time).
EARLIEST_MS = int(pd.Timestamp("2000-01-01", tz="UTC").value // 1_000_000)
LATEST_MS = int(pd.Timestamp("2100-01-01", tz="UTC").value // 1_000_000)


def _canonical_times(text: pd.Series) -> pd.Series:
    """Each value on its own as zero-padded ISO 8601 (so no value's reading depends on its neighbours),
    epoch values as '@<ms>', anything else (now, today, words) as ''."""
    parts = text.str.extract(_DATE_FORM)
    iso = (
        parts["y"] + "-" + parts["m"].str.zfill(2) + "-" + parts["d"].str.zfill(2)
        + ("T" + parts["H"].str.zfill(2) + ":" + parts["M"].str.zfill(2) + ":" + parts["S"].fillna("00").str.zfill(2)).fillna("T00:00:00")
        + parts["z"].fillna("")
    )
    epoch = text.where(text.str.fullmatch(_EPOCH_FORM))
    epoch_ms = "@" + epoch.where(epoch.str.len() == 13, epoch + "000")
    return iso.fillna(epoch_ms).fillna("")


def parse_times(values: Sequence[Any] | pd.Series, tz: dt.tzinfo) -> np.ndarray:
    """Export times -> int64 epoch ms; values without an offset are read in `tz`. Unparseable values and
    times outside [2000-01-01, 2100-01-01) -> MISSING_TIME (the caller rejects the row with a reason).
    Accepted forms: see `_DATE_FORM` and `_EPOCH_FORM`, and datetime columns of Parquet/Excel."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    series = series.reset_index(drop=True)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        result = series.dt.tz_convert(None).dt.as_unit("ms").to_numpy().view(np.int64).copy()
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        local = series.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        result = local.dt.tz_convert(None).dt.as_unit("ms").to_numpy().view(np.int64).copy()
    else:
        result = np.full(len(series), MISSING_TIME, dtype=np.int64)
        present = series.notna().to_numpy()
        if not present.any():
            return result
        text = _canonical_times(series[present].astype(str).str.strip())
        positions = np.flatnonzero(present)
        epoch = text.str.startswith("@").to_numpy()
        if epoch.any():
            result[positions[epoch]] = text[epoch].str[1:].astype(np.int64).to_numpy()
        aware = text.str.contains(_OFFSET_RE, regex=True).to_numpy() & ~epoch
        naive = (text != "").to_numpy() & ~aware & ~epoch
        if aware.any():
            parsed = pd.to_datetime(text[aware], format="ISO8601", utc=True, errors="coerce")
            result[positions[aware]] = parsed.dt.tz_convert(None).dt.as_unit("ms").to_numpy().view(np.int64)
        if naive.any():
            parsed = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
            parsed = parsed.where((parsed.dt.year >= 1999) & (parsed.dt.year <= 2100))  # before localising: no overflow
            local = parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            result[positions[naive]] = local.dt.tz_convert(None).dt.as_unit("ms").to_numpy().view(np.int64)
    result[(result < EARLIEST_MS) | (result >= LATEST_MS)] = MISSING_TIME
    return result


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


def format_times(times_ms: np.ndarray, tz: dt.tzinfo) -> list[str | None]:
    """int64 epoch ms -> '2024-05-03T08:00:00+08:00' (None for unknown)."""
    times_ms = np.asarray(times_ms, dtype=np.int64)
    out: list[str | None] = [None] * len(times_ms)
    known = np.flatnonzero(times_ms != MISSING_TIME)
    if len(known):
        local = pd.DatetimeIndex(pd.to_datetime(times_ms[known], unit="ms", utc=True)).tz_convert(tz)
        texts = local.strftime("%Y-%m-%dT%H:%M:%S%z")
        for i, text in zip(known, texts, strict=True):
            out[i] = f"{text[:-2]}:{text[-2:]}"
    return out


# --- orders -----------------------------------------------------------------------------------------


def buyer_shop_keys(buyer_ids: Sequence[Any], shop_ids: Sequence[Any]) -> np.ndarray:
    """A stable 64-bit key per (buyer, shop): the orders index stays 16 bytes an order."""
    buyers = pd.Series(np.asarray(buyer_ids, dtype=object)).astype(str)
    shops = pd.Series(np.asarray(shop_ids, dtype=object)).astype(str)
    joined = (buyers + "\x1f" + shops).to_numpy(dtype=object)
    return pd.util.hash_array(joined)


class OrdersIndex:
    """buyer+shop -> sorted paid_at times, held as two int64 arrays; queries are vectorised."""

    def __init__(self, keys: np.ndarray, paid_at_ms: np.ndarray):
        keys = np.asarray(keys, dtype=np.uint64)
        paid = np.asarray(paid_at_ms, dtype=np.int64)
        order = np.lexsort((paid, keys))
        self.keys = keys[order]
        self.paid_at_ms = paid[order]
        self.unique_keys, self.key_starts = np.unique(self.keys, return_index=True)
        self._composite: np.ndarray | None = None
        if len(paid):
            self.t_min = int(paid.min())
            self.span = int(paid.max()) - self.t_min + 1
            rank = np.searchsorted(self.unique_keys, self.keys)
            if len(self.unique_keys) * self.span < 2**62:
                self._composite = rank.astype(np.int64) * self.span + (self.paid_at_ms - self.t_min)

    @classmethod
    def from_arrays(cls, buyer_ids: Sequence[Any], shop_ids: Sequence[Any], paid_at_ms: Sequence[int]) -> "OrdersIndex":
        return cls(buyer_shop_keys(buyer_ids, shop_ids), np.asarray(paid_at_ms, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.paid_at_ms)

    def save(self, path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, keys=self.keys, paid_at_ms=self.paid_at_ms)

    @classmethod
    def load(cls, path) -> "OrdersIndex":
        with np.load(path) as data:
            return cls(data["keys"], data["paid_at_ms"])

    def any_paid_between(self, keys: np.ndarray, start_ms: np.ndarray, end_ms: np.ndarray) -> np.ndarray:
        """For each query: is there an order with that key paid in [start, end] (both inclusive)?"""
        keys = np.asarray(keys, dtype=np.uint64)
        start_ms = np.asarray(start_ms, dtype=np.int64)
        end_ms = np.asarray(end_ms, dtype=np.int64)
        hit = np.zeros(len(keys), dtype=bool)
        if not len(self.paid_at_ms) or not len(keys):
            return hit
        pos = np.searchsorted(self.unique_keys, keys)
        pos_clipped = np.minimum(pos, len(self.unique_keys) - 1)
        found = (pos < len(self.unique_keys)) & (self.unique_keys[pos_clipped] == keys)
        found &= (start_ms != MISSING_TIME) & (end_ms != MISSING_TIME) & (start_ms <= end_ms)
        if self._composite is not None:
            rel_start = np.clip(start_ms - self.t_min, 0, self.span)
            rel_end = np.clip(end_ms - self.t_min, -1, self.span - 1)
            base = pos_clipped.astype(np.int64) * self.span
            at = np.searchsorted(self._composite, base + rel_start, side="left")
            at_clipped = np.minimum(at, len(self._composite) - 1)
            hit = found & (at < len(self._composite)) & (self._composite[at_clipped] <= base + rel_end)
            return hit
        ends = np.append(self.key_starts[1:], len(self.keys))
        for i in np.flatnonzero(found):  # spans too wide for the composite key: per query
            segment = self.paid_at_ms[self.key_starts[pos[i]] : ends[pos[i]]]
            j = np.searchsorted(segment, start_ms[i], side="left")
            hit[i] = j < len(segment) and segment[j] <= end_ms[i]
        return hit


# --- scoring ----------------------------------------------------------------------------------------


def normalize_roles(values: Sequence[Any], policy: NudgePolicy) -> np.ndarray:
    """Role names mapped through the aliases; unknown roles become ''."""
    series = pd.Series(np.asarray(values, dtype=object)).astype(str).str.strip().str.lower()
    aliases = dict(policy.role_aliases) or {role: role for role in ROLES}
    return series.map(aliases).fillna("").to_numpy(dtype=object)


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
    args = (scorer.predictor.purchase_threshold, scorer.pre_sales_intents, scorer.concern_intents)
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
    last_turn_is_buyer, n_buyer_turns."""
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
        }
    )
    return frame, {"buyer_messages": int(len(buyer_rows)), "unique_buyer_texts": int(flat["n_unique"])}


def _evidence_text(text: str, max_chars: int) -> str:
    masked = mask_pii(text).replace("\r", " ").replace("\n", " ").strip()
    return masked if len(masked) <= max_chars else masked[: max_chars - 1] + "…"


# --- decisions --------------------------------------------------------------------------------------


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


# --- the service-facing entry point -----------------------------------------------------------------


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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    times = parse_times(sent_at, policy.tz) if n else np.zeros(0, dtype=np.int64)
    shown = sent_at.to_numpy(object) if isinstance(sent_at, pd.Series) else list(sent_at)
    reject(~time_blank & (times == MISSING_TIME), lambda i: f"{UNREADABLE_TIME} {str(shown[i])!r}")
    damaged = text_values.fillna("").astype(str).str.contains("\ufffd", regex=False).to_numpy(dtype=bool)
    reject(damaged, "bad encoding (U+FFFD in text)")
    return CheckedTurns(canonical, times, reasons)


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
    paid = parse_times(paid_source, policy.tz)
    reasons = np.full(len(frame), None, dtype=object)
    for name in ORDER_COLUMNS:
        reasons[is_blank(values[name]) & (reasons == None)] = f"missing {name}"  # noqa: E711
    reasons[(paid == MISSING_TIME) & (reasons == None)] = "unparseable paid_at"  # noqa: E711
    good = reasons == None  # noqa: E711
    ids = {name: values[name][good].map(lambda v: str(v).strip()).to_numpy(object) for name in ("buyer_id", "shop_id")}
    return CheckedOrders(buyer_shop_keys(ids["buyer_id"], ids["shop_id"]), paid[good], reasons)


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
        )
        for i, row in enumerate(decided.itertuples(index=False))
    ]
