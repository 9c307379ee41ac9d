"""Request and response models of the service, with the limits of the `serving:` config section.

Importing this module reads nothing. The config named by `BUYER_INTENT_CONFIG` (default:
configs/default.yaml) is read on first use (`serving_config`, once per process), and the request models,
whose limits come from it, are built then (`request_models`), so the limits appear in the OpenAPI
document (`/docs.json`) as `maxItems` / `maxLength` and a request that breaks one is refused with 400
before any work is done. BentoML takes a service's settings (`@bentoml.service`: workers, port,
timeout) and its request models (`@bentoml.api(input_spec=...)`) when the service class is defined, so
`serving.service`, the module `bentoml serve` imports, asks for both at its import: that is the one
place the user's config is read at import, because BentoML has no later hook for them.

Every request model is strict (no silent coercion: `1` is not a string, `"yes"` is not a boolean),
forbids unknown fields (a typo in a field name is an error, not an ignored field) and hides the
offending input in its errors, so buyer text never reaches the logs through a validation error.
A list's validation stops at its first invalid item (`fail_fast`): a bad request gets a few errors,
not one per item, so a 16 MiB body of wrong values cannot make a response of millions of errors.

Before any of that, `body_problem` checks the shape of the raw body in linear time (the service's
RequestGuard calls it once the body is read, before the body takes a concurrency slot): nesting at
most MAX_JSON_DEPTH levels, no more objects and arrays than the largest valid request holds (from
the length limits), at most MAX_OBJECT_KEYS keys of at most MAX_KEY_CHARS characters per object, and
no key twice in one object (JSON parsers disagree on which copy counts; I-JSON, RFC 7493, forbids it).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from pipeline.config import Config, ServingSettings, load_config
from pipeline.nudge import NudgePolicy

CONFIG_ENV = "BUYER_INTENT_CONFIG"


def config_path() -> str | None:
    return os.environ.get(CONFIG_ENV) or None


@functools.cache
def serving_config() -> Config:
    """The service's config (`BUYER_INTENT_CONFIG`, default configs/default.yaml), read and validated on first use."""
    return load_config(config_path())


def serving_settings() -> ServingSettings:
    return serving_config().serving


@functools.cache
def nudge_policy() -> NudgePolicy:
    """The lost-shopper policy of `buyer-intent flag`, from the same config's `flag:` section."""
    return NudgePolicy.from_config(serving_config().flag)


_REQUEST_CONFIG = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)

# `pattern` (searched, as JSON Schema does) publishes in /docs.json what stripping then `min_length` enforces:
# an identifier of white space only is refused, so a client validating against the schema is not surprised.
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"\S")]


# --------------------------------------------------------------------------------------------- common


class ModelInfo(BaseModel):
    """The model that answered: the registered MLflow name and version (`local` for a bundle directory)."""

    name: str
    version: str


class ErrorResponse(BaseModel):
    """Every error response: what went wrong, and for invalid input which field and why."""

    error: str = Field(description="one line: the field and the reason, or what went wrong")
    detail: list[dict] = Field(default_factory=list, description="pydantic error list: loc, msg, type (input values omitted)")


# ------------------------------------------------------------------------------------------- classify


class IntentScore(BaseModel):
    intent: str
    score: float


class NgramContribution(BaseModel):
    ngram: str = Field(description="the n-gram of the normalised message, PII masked (numbers, phones, order numbers ... as [数字x], [电话x], [订单x]); "
                       "words of a word n-gram are separated by a space, a blank in a character n-gram is shown as ␣")
    kind: str = Field(description="`word` (jieba word n-gram) or `char` (character n-gram)")
    contribution: float = Field(description="TF-IDF value of the n-gram in the message times its weight: its term of the logit")


class IntentExplanation(BaseModel):
    label: str = Field(description="the explained intent: the predicted one")
    logit: float = Field(description="the intent model's score of `label` before calibration = intercept + the contributions of all n-grams")
    intercept: float
    rest: float = Field(description="the sum of the contributions of the n-grams not listed")
    ngrams: list[NgramContribution] = Field(description="the n-grams with the largest positive contributions, largest first")


class PurchaseExplanation(BaseModel):
    logit: float = Field(description="the purchase model's score before calibration = intercept + the contributions of all n-grams")
    intercept: float
    rest: float = Field(description="the sum of the contributions of the n-grams not listed")
    ngrams: list[NgramContribution] = Field(description="the n-grams with the largest absolute contributions (positive: towards purchase intent)")


class Explanation(BaseModel):
    """Read exactly from the linear models' weights (pipeline/explain.py): no sampling."""

    intent: IntentExplanation
    purchase: PurchaseExplanation | None = Field(description="null when the model has no purchase detector")


class MessageResult(BaseModel):
    intent: str = Field(description="the most likely intent (`other` for an empty message)")
    confidence: float = Field(description="calibrated probability of `intent`")
    top_intents: list[IntentScore] = Field(description="the 3 most likely intents with their probabilities (empty for an empty message)")
    fallback: bool = Field(description="confidence is below the model's fallback threshold: route to a human / generic reply")
    purchase_intent: bool = Field(description="the buyer wants to buy now or soon (purchase_score >= the model's threshold)")
    purchase_score: float = Field(description="probability of purchase intent")
    explanation: Explanation | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="only with `\"explain\": true`, and not for an empty message (the model does not score it)",
    )


class ClassifyResponse(BaseModel):
    model: ModelInfo
    results: list[MessageResult] = Field(description="one per request message, in order")


# --------------------------------------------------------------------------------------- conversations


class ScoreResponse(BaseModel):
    """The decision `buyer-intent flag` makes for this conversation (pipeline.nudge.decide)."""

    model: ModelInfo
    conversation_id: str
    buyer_id: str
    shop_id: str
    category: str | None
    purchase_score: float = Field(description="conversation-level purchase score")
    expressed_purchase_intent: bool = Field(description="purchase_score >= the threshold (flag.min_score or the model's)")
    lost: bool | None = Field(description="no order followed (from `ordered`); null when not known")
    nudge: bool = Field(description="on the nudge list: lost, expressed purchase intent, no complaint or refund")
    reason: str = Field(description="flagged | not_lost | no_purchase_intent | complaint_or_refund | duplicate_in_window | order_unknown")
    evidence: str = Field(description="the buyer message that showed the most purchase intent (PII masked)")
    open_concern: str = Field(description="the last buyer concern (price_promo, stock ...), empty when none")
    suggested_nudge: str = Field(description="nudge for the open concern: coupon, shipping_promise, restock_alert, size_help, reminder ...")
    nudge_text: str
    priority: int = Field(description="1 (send first) to 3")
    send_after: str | None = Field(description="earliest send time outside quiet hours (ISO 8601)")
    last_message_at: str | None
    buyer_messages: int = Field(description="buyer messages the model read")
    confident_buyer_messages: int = Field(
        description="of them, those above the model's recorded ATC confidence threshold: over many conversations, "
        "their share estimates the intent accuracy without labels (0 when the model has no record)"
    )


class NudgeRow(BaseModel):
    """One row of the nudge list, the columns of `buyer-intent flag` output."""

    conversation_id: str
    buyer_id: str
    shop_id: str
    category: str | None
    purchase_score: float
    evidence: str
    open_concern: str
    suggested_nudge: str
    nudge_text: str
    priority: int
    send_after: str | None


class FlagResponse(BaseModel):
    model: ModelInfo
    rows: list[NudgeRow] = Field(description="flagged conversations in the batch job's order: priority, score, send time, shop, id")
    conversations: int
    flagged: int
    reasons: dict[str, int] = Field(description="conversations per decision reason")


# ------------------------------------------------------------------------------------ request models


@dataclass(frozen=True)
class RequestModels:
    """The request models, with the limits and role names of one config."""

    ClassifyRequest: type[BaseModel]
    Turn: type[BaseModel]
    Conversation: type[BaseModel]
    FlagConversation: type[BaseModel]
    ScoreRequest: type[BaseModel]
    FlagRequest: type[BaseModel]


@functools.cache
def request_models() -> RequestModels:
    """The request models of the service's config (`serving_config`), built once, on first use."""
    settings, policy = serving_settings(), nudge_policy()
    role_names = tuple(sorted(policy.role_aliases))
    Text = Annotated[str, StringConstraints(max_length=settings.max_chars)]  # noqa: N806 (a type)

    class ClassifyRequest(BaseModel):
        model_config = _REQUEST_CONFIG

        messages: list[Text] = Field(
            max_length=settings.max_messages,
            fail_fast=True,
            description=f"buyer messages, at most {settings.max_messages}, each at most {settings.max_chars} characters; "
            "an empty string is valid and classifies as `other` with `fallback`",
        )
        explain: bool = Field(
            default=False,
            description="also return, per message, the n-grams that pushed the predicted intent and the purchase score, "
            "with their contributions to the linear models' logits (`explanation`); without it the response has no `explanation`",
        )


    class Turn(BaseModel):
        model_config = _REQUEST_CONFIG

        role: str = Field(
            max_length=32,
            json_schema_extra={"enum": list(role_names)},
            description="`buyer`, `agent` or `bot`, or an alias from the `flag.roles` config (买家, 客服 ...); case is ignored",
        )
        text: Text = Field(description="the message; turns with empty text are ignored, as the batch job rejects such rows")
        sent_at: str = Field(
            min_length=1,
            max_length=64,
            json_schema_extra={"format": "date-time"},
            description="ISO 8601 time, e.g. 2026-11-20T21:13:05+08:00; without an offset it is read in the `flag.timezone` zone",
        )

        @field_validator("role")
        @classmethod
        def _known_role(cls, value: str) -> str:
            if value.strip().lower() not in policy.role_aliases:
                raise ValueError(f"unknown role; expected one of {', '.join(role_names)}")
            return value


    class Conversation(BaseModel):
        model_config = _REQUEST_CONFIG

        conversation_id: Identifier
        buyer_id: Identifier | None = Field(default=None, description="default: conversation_id")
        shop_id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)] | None = Field(default=None, description="default: empty")
        category: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
        messages: list[Turn] = Field(min_length=1, max_length=settings.max_turns, fail_fast=True, description=f"the turns, at most {settings.max_turns}")
        ordered: bool | None = Field(
            default=None,
            description="did the buyer pay an order at this shop within the attribution window (`flag.window_hours`); "
            "null: not known, and then the conversation is never flagged",
        )


    class FlagConversation(Conversation):
        """On /flag, buyer and shop are required: one nudge per buyer per shop per window is decided on them."""

        buyer_id: Identifier
        shop_id: Identifier


    class ScoreRequest(BaseModel):
        model_config = _REQUEST_CONFIG

        conversation: Conversation


    class FlagRequest(BaseModel):
        model_config = _REQUEST_CONFIG

        conversations: list[FlagConversation] = Field(
            max_length=settings.max_conversations, fail_fast=True, description=f"at most {settings.max_conversations} conversations"
        )

    return RequestModels(ClassifyRequest, Turn, Conversation, FlagConversation, ScoreRequest, FlagRequest)


# ------------------------------------------------------------------------------------- body shape

REQUEST_DEPTH = 5  # the deepest request: /flag body > conversations > conversation > messages > turn
MAX_JSON_DEPTH = 8  # objects and arrays nested deeper are refused before any parser (which recurses) runs
MAX_OBJECT_KEYS = 32  # no request object has more than 6 fields; more keys are refused whole, not one error each
MAX_KEY_CHARS = 64  # no field name is longer than 15 characters; a longer key is never echoed back or logged
_OPENERS_CLOSERS = bytes.maketrans(b"{}", b"[]"), bytes(c for c in range(256) if c not in b"[]{}")
_DEPTH_CHUNK = 1 << 20


def max_json_containers(settings: ServingSettings) -> int:
    """The most objects and arrays a valid request holds: /flag with `max_conversations` conversations
    of `max_turns` turns (body, list, and per conversation itself, its turn list and its turns)."""
    return 2 + settings.max_conversations * (2 + settings.max_turns)


class _BodyRefused(ValueError):
    pass


def _check_object(pairs: list[tuple[str, Any]]) -> None:
    """`json.loads` object hook: keys only (the request models read the values)."""
    if len(pairs) > MAX_OBJECT_KEYS:
        raise _BodyRefused(f"an object with {len(pairs)} keys; request objects have at most {MAX_OBJECT_KEYS}")
    keys = {key for key, _ in pairs}
    if len(keys) < len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        shown = duplicate if len(duplicate) <= MAX_KEY_CHARS else duplicate[:MAX_KEY_CHARS] + "..."
        raise _BodyRefused(f"duplicate key {json.dumps(shown, ensure_ascii=False)} in one object; each field may appear once")
    if keys and max(map(len, keys)) > MAX_KEY_CHARS:
        raise _BodyRefused(f"an object key longer than {MAX_KEY_CHARS} characters; field names are short")
    return None


def _outside_strings(body: bytes) -> bytes:
    """The body without its strings (their brackets do not nest): escaped backslashes, then escaped
    quotes go first (read left to right, as in a string), then every other piece between quotes is
    inside a string. Exact for valid JSON; in any other body it only decides which refusal is named."""
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[0::2])


def _nesting_depth(brackets: bytes, limit: int) -> int:
    """Deepest nesting of a string of `[` and `]` (the body's objects and arrays, strings removed), in
    chunks (bounded memory); stops as soon as it passes `limit`."""
    depth = deepest = 0
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        chunk = np.frombuffer(brackets, np.uint8, count=min(_DEPTH_CHUNK, len(brackets) - start), offset=start)
        levels = depth + np.cumsum(np.where(chunk == ord("["), 1, -1), dtype=np.int64)
        deepest = max(deepest, int(levels.max()))
        if deepest > limit:
            break
        depth = int(levels[-1])
    return deepest


def body_problem(body: bytes, max_containers: int = 0) -> str | None:
    """Why a JSON request body is refused before the request models parse it, or None.

    Linear time, no recursion: strings are cut out (bytes.replace and split), the nesting depth is the
    running count of the remaining brackets, and only then is the body parsed (`json.loads`, whose
    recursion is now bounded by MAX_JSON_DEPTH, with a hook that looks at the keys of each object).
    `max_containers` (0: unchecked) bounds the objects and arrays, so the hook runs a bounded number of
    times. A body that is not JSON at all is left to the request models, which say where it breaks."""
    if not body:
        return None
    structure = _outside_strings(body)
    containers = structure.count(b"{") + structure.count(b"[")
    if max_containers and containers > max_containers:
        return f"{containers} JSON objects and arrays; a valid request has at most {max_containers}"
    # no deeper than it has containers: the running count is only needed past the limit (not for live traffic)
    if containers > MAX_JSON_DEPTH and _nesting_depth(structure.translate(*_OPENERS_CLOSERS), MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels; a request has at most {REQUEST_DEPTH}"
    try:
        json.loads(body, object_pairs_hook=_check_object, strict=False)  # strict=False: control characters are the models' call
    except _BodyRefused as exc:
        return str(exc)
    except RecursionError:  # cannot happen below MAX_JSON_DEPTH; never a 500 if it did
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels; a request has at most {REQUEST_DEPTH}"
    except ValueError:  # not JSON (or not UTF-8): the request models' parser says where and why
        return None
    return None


_LAZY = {"SETTINGS": serving_settings, "POLICY": nudge_policy, "CONFIG": serving_config}


def __getattr__(name: str):
    """`serving.schemas.Conversation` (and the other request models), SETTINGS, POLICY, CONFIG: built on first access."""
    if name in RequestModels.__dataclass_fields__:
        return getattr(request_models(), name)
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
