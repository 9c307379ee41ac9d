"""Lost-shopper decisions (催拍): lost or not, nudge choice and text, policy, priority.

The batch job (`buyer-intent flag`, pipeline/jobs/flag/) and the service (`/score_conversation`, `/flag`)
both decide through this package, so one conversation gets the same decision wherever it is judged.

API for callers (everything else here is the shared machinery behind it):

    policy = NudgePolicy.from_config(config.flag)                 # or .from_config(config.flag, window_hours=48)
    scorer = ConversationScorer(Predictor(load_model(ref)))
    orders = OrdersIndex.from_arrays(buyer_ids, shop_ids, parse_times(paid_at, policy.tz, policy.time_range))   # optional
    decisions = decide([ConversationInput(conversation_id, buyer_id, shop_id, turns, category, ordered)],
                       scorer, policy, orders_index=orders)       # -> list[Decision], same order

- `turns` are `pipeline.conversation.Turn(role, text, sent_at)`; sent_at is ISO 8601 (no offset: read in
  `policy.tz`); turns are put in time order. Roles are mapped through the configured aliases (买家 -> buyer ...).
  Turns the batch job would reject (unknown role, blank text, unparseable sent_at) are left out
  (`usable_turns`); turns without any sent_at are kept, but then lost/send_after need `ordered`/times.
- `Decision`: purchase_score (conversation level), expressed_purchase_intent, lost (True/False/None), nudge, reason
  (flagged | not_lost | no_purchase_intent | complaint_or_refund | duplicate_in_window | order_unknown),
  evidence, open_concern, suggested_nudge, nudge_text, priority (1 = first), send_after, last_message_at,
  buyer_messages and confident_buyer_messages (above the model's ATC threshold: `pipeline.drift`).
- The intent threshold is `policy.threshold(scorer)`: config `min_score`, else the model's validated one.
- Lost: with `orders_index`, no order paid by that buyer at that shop between the conversation's start
  (config `attribution_start`) and the last message + window; otherwise `ConversationInput.ordered`;
  neither known -> `lost=None`, never flagged (reason `order_unknown`).
- One nudge per buyer per shop per window is enforced within the list passed; a live sender must also
  keep its own send log across calls.
- Every text in a Decision is PII-masked (`mask_pii`).

Timestamps inside are int64 epoch milliseconds (UTC); `MISSING_TIME` (NaT's int64 value) marks unknown.
"""


from pipeline.nudge.decisions import NUDGE_COLUMNS, ConversationInput, Decision, decide
from pipeline.nudge.orders import OrdersIndex
from pipeline.nudge.policy import NudgePolicy

__all__ = ["NUDGE_COLUMNS", "ConversationInput", "Decision", "NudgePolicy", "OrdersIndex", "decide"]
