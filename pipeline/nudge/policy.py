"""The nudge policy: everything a decision depends on besides the model and the orders, and why a
conversation is or is not on the nudge list."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.config import ROLES, FlagSettings, ShareAlertSettings, load_flag_settings
from pipeline.times import MS_PER_HOUR, date_ms, parse_clock, parse_timezone

if TYPE_CHECKING:
    from pipeline.conversation import ConversationScorer

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

    time_range: tuple[int, int]  # epoch ms [earliest, latest): the one date rule (config flag.time_range)
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
            time_range=(date_ms(settings.time_range[0]), date_ms(settings.time_range[1])),
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
