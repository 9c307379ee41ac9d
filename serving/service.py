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

import asyncio
import collections
import json
import logging
import os
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
from starlette.responses import JSONResponse

from pipeline.conversation import ConversationScorer
from pipeline.explain import DEFAULT_TOP_K, Explainer, UnsupportedExplanation
from pipeline.inference import Predictor
from serving.conversations import InvalidConversation, decide_conversations, nudge_rows, reason_counts, score_response
from serving.schemas import (
    ClassifyResponse,
    ErrorResponse,
    Explanation,
    FlagResponse,
    IntentScore,
    MessageResult,
    ModelInfo,
    ScoreResponse,
    body_problem,
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
API_ROUTES = ("/classify", "/score_conversation", "/flag")


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


# ------------------------------------------------------------------------------------------- metrics

_METRICS: dict[str, Any] = {}


def _metrics() -> dict[str, Any]:
    """The service's own Prometheus metrics, created once per process on first use: prometheus_client
    must be imported after the worker has set PROMETHEUS_MULTIPROC_DIR (BentoML's /metrics collects
    every worker's files from there), so not at module import."""
    if not _METRICS:
        from prometheus_client import Counter, Histogram

        _METRICS.update(
            batch_messages=Histogram(
                "buyer_intent_batch_messages", "messages per model call (adaptive batching)",
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            ),
            batch_requests=Histogram(
                "buyer_intent_batch_requests", "requests per model call (adaptive batching)", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
            ),
            batch_seconds=Histogram(
                "buyer_intent_batch_seconds", "model time per batch",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            ),
            messages=Counter("buyer_intent_messages", "classified messages by predicted intent and fallback", ["intent", "fallback"]),
            decisions=Counter("buyer_intent_decisions", "conversation decisions by endpoint and reason", ["endpoint", "reason"]),
        )
    return _METRICS


def _observe_batch(requests: int, results: list[dict[str, Any]], seconds: float) -> None:
    """Per model call, not per request: at hundreds of requests a second, metric updates add up."""
    metrics = _metrics()
    metrics["batch_requests"].observe(requests)
    metrics["batch_messages"].observe(len(results))
    metrics["batch_seconds"].observe(seconds)
    counter = metrics["messages"]
    for (intent, fallback), count in collections.Counter((r["intent"], r["fallback"]) for r in results).items():
        counter.labels(intent=intent, fallback="true" if fallback else "false").inc(count)


# ------------------------------------------------------------------------------- HTTP-level guarding


class _ClientErrorLogFilter(logging.Filter):
    """BentoML logs every invalid request as an ERROR with a traceback. A client's mistake is not a
    server error: log it as one INFO line with the fields and reasons (never the input, which may be
    buyer text; the request models hide inputs in their errors anyway)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            record.msg = "invalid request %s: %s"
            record.args = (record.args[0] if record.args else "", _error_summary(exc.errors(include_input=False, include_url=False)))
        elif isinstance(exc, BentoMLException) and exc.error_code.value < 500:
            record.msg = "refused request %s: %s %s"
            record.args = (record.args[0] if record.args else "", exc.error_code.value, type(exc).__name__)
        else:
            return True
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(_ClientErrorLogFilter())


def _error_summary(errors: list[dict[str, Any]], limit: int = 3) -> str:
    """`messages.3: String should have at most 2000 characters; ...` from pydantic's error list."""
    parts = []
    for error in errors[:limit]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "root") or "body"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


def _json_error(status: int, message: str, headers: dict[str, str] | None = None, detail: list[dict] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail or []}, status_code=status, headers=headers)


def _invalid(errors: list[dict[str, Any]]) -> JSONResponse:
    """400 for input the schema lets through but the batch job's row checks would reject."""
    log.info("invalid request: %s", _error_summary(errors))
    return JSONResponse({"error": _error_summary(errors), "detail": errors}, status_code=400)


class RequestGuard:
    """ASGI middleware in front of the API routes.

    * request bodies: only JSON (415 otherwise), at most `serving.max_body_mb` (413, read no further);
      then their shape, in linear time and before the body takes a slot (`serving.schemas.body_problem`:
      nesting depth, objects and arrays beyond the largest valid request, oversized or duplicate keys): 400;
    * 4xx answers get one shape, `{"error": "<field>: <why>", "detail": [...]}` (BentoML answers
      validation errors with a generic title, and its other 4xx errors as a one-element list);
    * /docs.json: BentoML's OpenAPI document completed with the error responses and nullable fields;
    * after `keepalive_requests` API requests on one connection, the answer carries `Connection:
      close` (as nginx's `keepalive_requests`). The workers share one listening socket and a burst of
      new connections mostly lands on one of them; a client that reconnects is accepted by whichever
      worker is waiting, so connections drift to the less busy worker.
    """

    def __init__(
        self,
        app,
        max_body_bytes: int,
        keepalive_requests: int = 0,
        api_routes: tuple[str, ...] = API_ROUTES,
        max_in_flight: int = 0,
        body_timeout_s: float = 0.0,
        max_json_containers: int = 0,
    ):
        self.app = app
        self.max_json_containers = max_json_containers
        self.max_body_bytes = max_body_bytes
        self.keepalive_requests = keepalive_requests
        self.max_in_flight = max_in_flight
        self.body_timeout_s = body_timeout_s
        self._slots: asyncio.Semaphore | None = None  # made in the worker's event loop, on first use
        self.api_routes = frozenset(api_routes)
        self._openapi: bytes | None = None
        self._served: collections.OrderedDict[Any, int] = collections.OrderedDict()  # requests per client connection

    def _last_on_connection(self, client: Any) -> bool:
        """Count this request on its connection (the client's address and port); True when the
        connection has had its share. Connections the client closed are forgotten oldest first."""
        if not self.keepalive_requests or client is None:
            return False
        served = self._served.pop(client, 0) + 1
        if served >= self.keepalive_requests:
            return True
        self._served[client] = served
        if len(self._served) > 4096:
            self._served.popitem(last=False)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/docs.json" and scope["method"] in ("GET", "HEAD"):
            return await self._openapi_document(scope, receive, send)
        if path not in self.api_routes or scope["method"] != "POST":
            return await self.app(scope, receive, send)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        media_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media_type not in ("application/json", ""):
            return await _json_error(415, f"body must be application/json, got {media_type}")(scope, receive, send)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _json_error(400, "invalid Content-Length")(scope, receive, send)
            if int(declared) > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s if self.body_timeout_s else None
        while True:
            try:
                if deadline is None:
                    message = await receive()
                else:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:  # a slow or stalled body: it never holds a model slot
                response = _json_error(408, f"request body not received within {self.body_timeout_s:g} s", {"Connection": "close"})
                return await response(scope, receive, send)
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = body_problem(body, self.max_json_containers)
        if problem:  # never parsed by the request models: no recursion, no error per item
            log.info("refused request %s: body: %s", path, problem)
            detail = [{"type": "json_invalid", "loc": [], "msg": problem}]
            return await _json_error(400, f"body: {problem}", detail=detail)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if self._last_on_connection(scope.get("client")):
            send = _closing(send)
        if not self.max_in_flight:
            return await self.app(scope, replay, _ErrorReshaper(send))
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        if self._slots.locked():  # a slot is taken only once the whole body is here
            return await _json_error(429, "too many requests in flight (serving.max_concurrency)", {"Retry-After": "1"})(scope, replay, send)
        async with self._slots:
            await self.app(scope, replay, _ErrorReshaper(send))

    async def _too_large(self, scope, receive, send):
        limit = self.max_body_bytes / (1024 * 1024)
        response = _json_error(413, f"request body larger than {limit:g} MiB", {"Connection": "close"})
        await response(scope, receive, send)

    async def _openapi_document(self, scope, receive, send):
        if self._openapi is None:
            try:
                self._openapi = json.dumps(openapi_document(), ensure_ascii=False).encode("utf-8")
            except Exception:
                log.exception("cannot build the OpenAPI document")
                return await _json_error(500, "cannot build the OpenAPI document")(scope, receive, send)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._openapi)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self._openapi if scope["method"] == "GET" else b""})


def _closing(send):
    """`send` with `Connection: close` added to the response head (uvicorn then closes the connection)."""

    async def closing_send(message):
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return closing_send


class _ErrorReshaper:
    """Rewrites 4xx JSON bodies into `{"error": ..., "detail": [...]}` and gives 429/503 a `Retry-After`;
    everything else passes."""

    def __init__(self, send):
        self.send = send
        self.start: dict | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            status = message["status"]
            if status in (429, 503) and not any(k.lower() == b"retry-after" for k, _ in message.get("headers", [])):
                # back-pressure tells the client when to come back (a load balancer or SDK retries then)
                message = {**message, "headers": [*message.get("headers", []), (b"retry-after", b"1")]}
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if 400 <= status < 500 and content_type.startswith(b"application/json"):
                self.start = message
                return
            return await self.send(message)
        if self.start is None or message["type"] != "http.response.body":
            return await self.send(message)
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = _reshape_error(b"".join(self.chunks))
        headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


def _reshape_error(raw: bytes) -> bytes:
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        payload = payload[0]
    if not isinstance(payload, dict):
        return raw
    detail = payload.get("detail")
    if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
        cleaned = [{k: v for k, v in d.items() if k in ("type", "loc", "msg")} for d in detail]
        payload = {"error": _error_summary(cleaned), "detail": cleaned}
    else:
        payload = {"error": str(payload.get("error") or payload.get("detail") or "bad request"), "detail": []}
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------------------- the service

# Concurrency is limited in RequestGuard (per worker, after the body is read), not by BentoML's own
# limiter, which counts a request from its first byte: slow bodies held every slot (#16).
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
        _metrics()
        self.model_info = ModelInfo(name=MODEL_SOURCE.name, version=MODEL_SOURCE.version)
        self.scorer: ConversationScorer | None = None
        self.explainer: Explainer | None = None  # built on the first `"explain": true`, in the model thread
        self.runtime = ModelRuntime(MODEL_SOURCE, SETTINGS.max_batch_messages, on_batch=_observe_batch)
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
            return _json_error(503, "the model failed to load; see the server log")
        return _json_error(503, "the model is still loading; retry shortly", {"Retry-After": "1"})

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
                return _json_error(400, f"explain: this model cannot be explained ({exc})")
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
            return _invalid(exc.errors)
        _metrics()["decisions"].labels(endpoint="score_conversation", reason=decisions[0].reason).inc()
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
            return _invalid(exc.errors)
        rows = nudge_rows(decisions, POLICY)
        counter = _metrics()["decisions"]
        for reason, count in reason_counts(decisions).items():
            counter.labels(endpoint="flag", reason=reason).inc(count)
        return FlagResponse(
            model=self.model_info, rows=rows, conversations=len(decisions), flagged=len(rows), reasons=reason_counts(decisions)
        )


def _message_result(result: dict[str, Any]) -> MessageResult:
    """Built without re-validation: the values come from the model, not from the client."""
    top = [IntentScore.model_construct(**item) for item in result["top_intents"]]
    if result.get("explanation") is not None:  # only with "explain": true; validated, it is small
        return MessageResult.model_construct(**{**result, "top_intents": top, "explanation": Explanation.model_validate(result["explanation"])})
    return MessageResult.model_construct(**{**result, "top_intents": top})


BuyerIntent.add_asgi_middleware(
    RequestGuard,
    max_body_bytes=SETTINGS.max_body_bytes,
    keepalive_requests=SETTINGS.keepalive_requests,
    max_in_flight=max(1, SETTINGS.max_concurrency // SETTINGS.workers),
    body_timeout_s=SETTINGS.body_timeout_s,
    max_json_containers=max_json_containers(SETTINGS),
)


# ------------------------------------------------------------------------------------------- OpenAPI

_EXTRA_RESPONSES = {
    "400": "invalid input: `error` names the field and the reason",
    "413": "request body too large",
    "415": "body is not application/json",
    "429": "too many requests in flight (serving.max_concurrency)",
    "503": "the model is still loading",
    "504": "not answered within serving.timeout_s",
}


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 has no `type: null`: `anyOf: [X, {type: null}]` becomes X with `nullable: true`."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        node.pop("anyOf")
        if len(rest) == 1 and "$ref" not in rest[0]:
            node = {**rest[0], **node, "nullable": True}
        else:
            node.update({"anyOf": rest, "nullable": True})
    return node


def openapi_document() -> dict[str, Any]:
    """BentoML's OpenAPI document with the error responses this service really gives, request and
    response bodies referring to the full component schemas, and nullable fields in 3.0 form."""
    spec = BuyerIntent.openapi_spec.asdict()
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for name, api in BuyerIntent.apis.items():
        operation = spec["paths"][api.route]["post"]
        operation["responses"] = {str(status): response for status, response in operation["responses"].items()}
        for spec_model, target in ((api.input_spec, operation["requestBody"]), (api.output_spec, operation["responses"]["200"])):
            component = spec_model.__name__
            if component in schemas:
                target["content"]["application/json"]["schema"] = {"$ref": f"#/components/schemas/{component}"}
        responses = operation["responses"]
        responses.pop("404", None)
        for status, description in _EXTRA_RESPONSES.items():
            responses[status] = {"description": description, "content": {"application/json": {"schema": error_ref}}}
        responses["500"] = {"description": "unexpected server error", "content": {"application/json": {"schema": error_ref}}}
        operation["requestBody"]["required"] = True
    # BentoML names the request/response components `<Model>IODescriptor`; use the model names.
    text = json.dumps(_nullable(spec), ensure_ascii=False)
    for api in BuyerIntent.apis.values():
        for spec_model in (api.input_spec, api.output_spec):
            name = spec_model.__name__
            if name.endswith("IODescriptor"):
                text = text.replace(f'"#/components/schemas/{name}"', f'"#/components/schemas/{name[: -len("IODescriptor")]}"')
                text = text.replace(f'"{name}"', f'"{name[: -len("IODescriptor")]}"')
    return json.loads(text)
