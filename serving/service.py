"""The buyer-intent service (BentoML 1.4): `bentoml serve serving.service:BuyerIntent`.

Endpoints (all POST, JSON in and out; every response names the model that answered):
  /classify            {"messages": [str, ...]} -> intent, confidence, top 3 intents, fallback,
                       purchase intent and score per message (adaptive batching across requests);
                       with "explain": true also the n-grams behind the intent and the purchase score
  /score_conversation  {"conversation": {...}} -> purchase score, expressed purchase intent, lost,
                       nudge with evidence, open concern and suggested nudge
  /flag                {"conversations": [...]} -> the nudge rows, as `buyer-intent flag` writes them
Built in: /livez, /readyz (503 until the model and jieba are loaded and warm), /metrics (Prometheus),
/docs.json (OpenAPI) and the UI at /.

Which model: see serving.runtime (`BUYER_INTENT_MODEL` or `BUYER_INTENT_BENTO_MODEL`). The model files
are checked when this module is imported, so `bentoml serve` refuses to start on a model that fails
its integrity check and says why; loading and warm-up then run in the background while /readyz says
503. Limits, timeout and concurrency come from the `serving:` section of the config.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import bentoml
from starlette.responses import JSONResponse

from pipeline.conversation import ConversationScorer
from pipeline.explain import DEFAULT_TOP_K, Explainer, UnsupportedExplanation
from pipeline.inference import Predictor
from serving.conversations import InvalidConversation, decide_conversations, nudge_rows, reason_counts, score_response
from serving.guard import API_ROUTES, RequestGuard, install_client_error_log_filter, invalid, json_error
from serving.inflight import SharedInFlight
from serving.metrics import metrics, observe_batch, observe_decisions, observe_model
from serving.openapi import openapi_document
from serving.schemas import (
    ClassifyResponse,
    Explanation,
    FlagResponse,
    IntentScore,
    MessageResult,
    ModelInfo,
    ScoreResponse,
    max_json_containers,
    nudge_policy,
    request_models,
    serving_settings,
)
from serving.runtime import (
    BENTO_MODEL_ENV,
    DEFAULT_BENTO_MODEL,
    MODEL_ENV,
    ModelRuntime,
    ServingStartupError,
    locate_model,
    preflight,
)

log = logging.getLogger("bentoml.buyer_intent")  # under "bentoml": the server's log handlers and levels apply

SERVICE_NAME = "buyer_intent"
install_client_error_log_filter()


# ------------------------------------------------------------------- what BentoML takes at import
# `bentoml serve` imports this module and reads the service's settings (@bentoml.service) and request
# models (@bentoml.api input_spec) from the class definition below, so the config is read here, once
# (serving.schemas reads nothing at its own import), and the request models are built from its limits.

SETTINGS = serving_settings()
POLICY = nudge_policy()
_REQUESTS = request_models()
ClassifyRequest, Turn, Conversation = _REQUESTS.ClassifyRequest, _REQUESTS.Turn, _REQUESTS.Conversation
FlagConversation, ScoreRequest, FlagRequest = _REQUESTS.FlagConversation, _REQUESTS.ScoreRequest, _REQUESTS.FlagRequest


# ----------------------------------------------------------------------------- model check at import


def _check_model():
    """Locate and check the model before any server starts (the supervisor and every worker import
    this module): a bad model stops `bentoml serve` / `bentoml build` here with the reason."""
    try:
        source = locate_model()
        preflight(source)
    except ServingStartupError as exc:
        log.critical("buyer-intent service cannot start: %s", exc)
        raise
    return source


MODEL_SOURCE = _check_model()


# --------------------------------------------------------------------------------------- the service

# Concurrency is limited in RequestGuard (over all workers, serving/inflight.py, after the body is read), not by
# BentoML's own limiter, which counts a request from its first byte: slow bodies held every slot (#16).
_traffic: dict[str, Any] = {"timeout": SETTINGS.timeout_s}


@bentoml.service(
    name=SERVICE_NAME,
    description="Intent and purchase-intent classification of buyer messages in e-commerce customer-service chats.",
    traffic=_traffic,
    workers=SETTINGS.workers,
    http={"port": SETTINGS.port},
    # Each costs CPU on every request in the event loop; off by default (see `serving.access_log`, `serving.tracing`).
    logging={"access": {"enabled": SETTINGS.access_log}},
    **({} if SETTINGS.tracing else {"tracing": {"excluded_urls": list(API_ROUTES)}}),
)
class BuyerIntent:
    if not os.environ.get(MODEL_ENV):
        # Declared for `bentoml build`, which packs the model into the Bento.
        bento_model = bentoml.models.BentoModel(os.environ.get(BENTO_MODEL_ENV) or DEFAULT_BENTO_MODEL)

    def __init__(self) -> None:
        metrics()
        self.model_info = ModelInfo(name=MODEL_SOURCE.name, version=MODEL_SOURCE.version)
        self.scorer: ConversationScorer | None = None
        self.explainer: Explainer | None = None  # built on the first `"explain": true`, in the model thread
        self.runtime = ModelRuntime(MODEL_SOURCE, SETTINGS.max_batch_messages, on_batch=observe_batch)
        self.runtime.warm_up_hook = self._warm_up_conversations
        self.runtime.start()  # load + warm in the model thread; /readyz is 503 until it is done
        log.info("buyer-intent service: loading %s (%s version %s)", MODEL_SOURCE.origin, MODEL_SOURCE.name, MODEL_SOURCE.version)

    def _warm_up_conversations(self, predictor: Predictor) -> None:
        """Conversation scoring and the decision code paths, before /readyz turns 200."""
        scorer = ConversationScorer(predictor)
        warm = Conversation(
            conversation_id="warm-up",
            messages=[
                Turn(role="buyer", text="在吗 这款有货吗 有货我就拍", sent_at="2026-01-01T10:00:00+08:00"),
                Turn(role="agent", text="亲 有货的哦", sent_at="2026-01-01T10:01:00+08:00"),
            ],
            ordered=False,
        )
        nudge_rows(decide_conversations([warm], scorer, POLICY, True), POLICY)
        self.scorer = scorer
        observe_model(predictor.bundle.manifest)

    # Probes (BentoML calls these for /livez and /readyz).
    def __is_alive__(self) -> bool:
        return not self.runtime.failed

    def __is_ready__(self) -> bool:
        return self.runtime.ready

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.runtime.close()

    def _unavailable(self) -> JSONResponse:
        if self.runtime.failed:
            return json_error(503, "the model failed to load; see the server log")
        return json_error(503, "the model is still loading; retry shortly", {"Retry-After": "1"})

    @bentoml.api(route="/classify", input_spec=ClassifyRequest)
    async def classify(self, messages: list[str], explain: bool = False) -> ClassifyResponse:
        """Intent, confidence, top 3 intents, fallback, purchase intent and score of each buyer message; with
        `"explain": true` also the n-grams that pushed the intent and the purchase score (pipeline/explain.py)."""
        if not self.runtime.ready:
            return self._unavailable()
        results = await self.runtime.classify(messages)
        if explain and results:
            try:
                explanations = await self.runtime.run(self._explain, messages, [r["intent"] for r in results])
            except UnsupportedExplanation as exc:
                return json_error(400, f"explain: this model cannot be explained ({exc})")
            results = [{**r, "explanation": e} for r, e in zip(results, explanations, strict=True)]
        return ClassifyResponse.model_construct(model=self.model_info, results=[_message_result(r) for r in results])

    def _explain(self, messages: list[str], intents: list[str]) -> list[dict[str, Any] | None]:
        """Explanations of the predicted intents (model thread: the tokenizers are never shared)."""
        predictor = self.runtime.predictor
        if self.explainer is None or self.explainer.bundle is not predictor.bundle:
            self.explainer = Explainer.for_predictor(predictor)
        return self.explainer.explain(messages, intents, DEFAULT_TOP_K)

    @bentoml.api(route="/score_conversation", input_spec=ScoreRequest)
    async def score_conversation(self, conversation: Conversation) -> ScoreResponse:
        """Purchase score, expressed purchase intent, lost, and the nudge decision (evidence, open concern,
        suggested nudge), exactly as `buyer-intent flag` decides it."""
        if not self.runtime.ready:
            return self._unavailable()
        try:
            decisions = await self.runtime.run(decide_conversations, [conversation], self.scorer, POLICY, True)
        except InvalidConversation as exc:
            return invalid(exc.errors)
        observe_decisions("score_conversation", decisions)
        return score_response(decisions[0], self.model_info)

    @bentoml.api(route="/flag", input_spec=FlagRequest)
    async def flag(self, conversations: list[FlagConversation]) -> FlagResponse:
        """The nudge list for these conversations: the rows and columns `buyer-intent flag` writes,
        with one nudge per buyer and shop per window applied within the request."""
        if not self.runtime.ready:
            return self._unavailable()
        try:
            decisions = await self.runtime.run(decide_conversations, conversations, self.scorer, POLICY)
        except InvalidConversation as exc:
            return invalid(exc.errors)
        rows = nudge_rows(decisions, POLICY)
        observe_decisions("flag", decisions)
        return FlagResponse(
            model=self.model_info, rows=rows, conversations=len(decisions), flagged=len(rows), reasons=reason_counts(decisions)
        )


def _message_result(result: dict[str, Any]) -> MessageResult:
    """Built without re-validation: the values come from the model, not from the client."""
    top = [IntentScore.model_construct(**item) for item in result["top_intents"]]
    if result.get("explanation") is not None:  # only with "explain": true; validated, it is small
        return MessageResult.model_construct(**{**result, "top_intents": top, "explanation": Explanation.model_validate(result["explanation"])})
    return MessageResult.model_construct(**{**result, "top_intents": top})


def _shared_slots() -> SharedInFlight | None:
    """One `max_concurrency` for all workers of this server (serving/inflight.py); None with one worker."""
    index = bentoml.server_context.worker_index
    if SETTINGS.workers < 2 or index is None:
        return None
    try:
        return SharedInFlight(SETTINGS.max_concurrency, SETTINGS.workers, index - 1, server_id=os.getppid())
    except OSError as exc:  # no writable temporary directory: each worker keeps its share of the bound
        log.warning("max_concurrency split per worker: no shared counter (%s)", exc)
        return None


BuyerIntent.add_asgi_middleware(
    RequestGuard,
    max_body_bytes=SETTINGS.max_body_bytes,
    keepalive_requests=SETTINGS.keepalive_requests,
    max_in_flight=max(1, SETTINGS.max_concurrency // SETTINGS.workers),
    body_timeout_s=SETTINGS.body_timeout_s,
    max_json_containers=max_json_containers(SETTINGS),
    openapi=functools.partial(openapi_document, BuyerIntent),
    shared_slots=_shared_slots,
)


