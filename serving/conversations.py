"""/score_conversation and /flag: request conversations -> `pipeline.nudge.decide` -> responses.

The decision itself (lost or not, purchase intent, skip rules, open concern, nudge choice, priority,
send time, one nudge per buyer and shop per window) is `pipeline.nudge`, the code `buyer-intent flag`
runs; this module only maps the request onto its inputs the way the batch job maps a chat export:
  * turns are used in time order (`decide` sorts them), roles through the `flag.roles` aliases;
  * turns with empty text are left out (the batch job rejects such rows as `missing text`);
  * `sent_at` must be readable by the batch job's parser, else the request is refused with 400
    (the batch job rejects such rows);
  * /score_conversation: `buyer_id` defaults to the conversation id and `shop_id` to empty;
    /flag requires both, as the batch job does.
/flag returns the flagged conversations in the batch job's order with its output columns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pipeline.conversation import ConversationScorer, Turn
from pipeline.nudge import NUDGE_COLUMNS, ConversationInput, Decision, NudgePolicy, decide
from pipeline.nudge.rows import UNREADABLE_TIME, check_turns
from pipeline.times import parse_times
from serving.schemas import Conversation, ModelInfo, NudgeRow, ScoreResponse



class InvalidConversation(ValueError):
    """Input that passes the schema but not the batch job's row checks; carries pydantic-style errors."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


def to_inputs(conversations: Sequence[Conversation], policy: NudgePolicy, single: bool = False) -> list[ConversationInput]:
    """`decide` inputs; raises InvalidConversation for a `sent_at` the batch job could not read. Turns the
    batch job would reject for other reasons (empty text) are left out by `decide` (`nudge.rows.check_turns`).
    `single`: the request holds one `conversation` (/score_conversation), not a `conversations` list."""
    turns = [turn for conversation in conversations for turn in conversation.messages]
    checked = check_turns([t.role for t in turns], [t.text for t in turns], [t.sent_at for t in turns], policy, time_required=True)
    unreadable = {i for i, reason in enumerate(checked.reasons) if reason and reason.startswith(UNREADABLE_TIME)}
    if unreadable:
        errors, position = [], 0
        for c, conversation in enumerate(conversations):
            for t in range(len(conversation.messages)):
                if position in unreadable and len(errors) < 20:
                    where = ("conversation",) if single else ("conversations", c)
                    errors.append(
                        {
                            "type": "datetime_parsing",
                            "loc": [*where, "messages", t, "sent_at"],
                            "msg": "not a readable date-time; use ISO 8601 such as 2026-11-20T21:13:05+08:00 (years 2000-2099)",
                        }
                    )
                position += 1
        raise InvalidConversation(errors)
    return [
        ConversationInput(
            conversation_id=conversation.conversation_id,
            buyer_id=conversation.buyer_id or conversation.conversation_id,
            shop_id=conversation.shop_id or "",
            turns=[Turn(turn.role, turn.text, turn.sent_at) for turn in conversation.messages],
            category=conversation.category or None,
            ordered=conversation.ordered,
        )
        for conversation in conversations
    ]


def score_response(decision: Decision, model: ModelInfo) -> ScoreResponse:
    """The response carries the Decision's fields under their own names (one schema, no renaming)."""
    return ScoreResponse(model=model, **decision.to_dict())


def nudge_rows(decisions: Sequence[Decision], policy: NudgePolicy) -> list[NudgeRow]:
    """The flagged decisions as nudge-list rows, in the order of the `buyer-intent flag` output:
    priority, purchase score (high first), send time, shop, conversation id."""
    flagged = [d for d in decisions if d.nudge]
    send_ms = parse_times([d.send_after for d in flagged], policy.tz, policy.time_range).tolist()
    order = sorted(
        range(len(flagged)),
        key=lambda i: (flagged[i].priority, -flagged[i].purchase_score, send_ms[i], flagged[i].shop_id, flagged[i].conversation_id),
    )
    return [NudgeRow(**{column: getattr(flagged[i], column) for column in NUDGE_COLUMNS}) for i in order]


def reason_counts(decisions: Sequence[Decision]) -> dict[str, int]:
    return dict(sorted(Counter(d.reason for d in decisions).items()))


def decide_conversations(
    conversations: Sequence[Conversation], scorer: ConversationScorer, policy: NudgePolicy, single: bool = False
) -> list[Decision]:
    """Exactly `buyer-intent flag`'s decisions (pipeline.nudge.decide) for the request's conversations."""
    return decide(to_inputs(conversations, policy, single), scorer, policy)
