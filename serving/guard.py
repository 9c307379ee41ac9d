"""HTTP-level guarding in front of the API routes (an ASGI middleware): JSON only, body size and shape
checked before a body takes a slot, a bound on requests in flight, one shape for 4xx answers, and
client mistakes logged as one INFO line."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable
from typing import Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
from starlette.responses import JSONResponse

from serving.schemas import body_problem

log = logging.getLogger("bentoml.buyer_intent")

API_ROUTES = ("/classify", "/score_conversation", "/flag")


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


def install_client_error_log_filter() -> None:
    """Called by the service module: importing this one changes no logger."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(_ClientErrorLogFilter())


def _error_summary(errors: list[dict[str, Any]], limit: int = 3) -> str:
    """`messages.3: String should have at most 2000 characters; ...` from pydantic's error list."""
    parts = []
    for error in errors[:limit]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "root") or "body"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


def json_error(status: int, message: str, headers: dict[str, str] | None = None, detail: list[dict] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail or []}, status_code=status, headers=headers)


def invalid(errors: list[dict[str, Any]]) -> JSONResponse:
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
      worker is waiting, so connections drift to the less busy worker (latency, not admission: the bound on
      requests in flight is the server's, counted over all workers, serving/inflight.py).
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
        openapi: Callable[[], dict[str, Any]] | None = None,
        shared_slots: Callable[[], Any] | None = None,
    ):
        self.app = app
        self.openapi = openapi
        self.max_json_containers = max_json_containers
        self.max_body_bytes = max_body_bytes
        self.keepalive_requests = keepalive_requests
        self.max_in_flight = max_in_flight
        self.body_timeout_s = body_timeout_s
        self._slots: asyncio.Semaphore | None = None  # made in the worker's event loop, on first use
        # () -> serving.inflight.SharedInFlight (one bound for all workers) or None (this worker's own
        # `max_in_flight`); called once, in the worker, on the first API request
        self._make_shared_slots = shared_slots
        self._shared_slots: Any = None
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
        if path == "/docs.json" and scope["method"] in ("GET", "HEAD") and self.openapi is not None:
            return await self._openapi_document(scope, receive, send)
        if path not in self.api_routes or scope["method"] != "POST":
            # an unknown route or a wrong method answers in the API's error shape, not Starlette's plain text
            if scope["method"] == "HEAD":  # no body to reshape
                return await self.app(scope, receive, send)
            return await self.app(scope, receive, _ErrorReshaper(send, f"{scope['method']} {path[:200]}"))

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        media_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media_type not in ("application/json", ""):
            return await json_error(415, f"body must be application/json, got {media_type}")(scope, receive, send)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return await json_error(400, "invalid Content-Length")(scope, receive, send)
            if int(declared) > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s if self.body_timeout_s else None
        try:
            # one deadline for the whole body (asyncio.timeout_at: no task per receive, as wait_for makes)
            async with asyncio.timeout_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        break
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:  # a slow or stalled body: it never holds a model slot
            response = json_error(408, f"request body not received within {self.body_timeout_s:g} s", {"Connection": "close"})
            return await response(scope, receive, send)
        if size > self.max_body_bytes:
            return await self._too_large(scope, receive, send)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:  # a GBK body, say: named as such, not as a JSON syntax error
            log.info("refused request %s: body is not UTF-8 (byte %d)", path, exc.start)
            detail = [{"type": "json_invalid", "loc": [], "msg": f"not UTF-8 at byte {exc.start}"}]
            return await json_error(400, "request body must be UTF-8 JSON", detail=detail)(scope, receive, send)
        problem = body_problem(body, self.max_json_containers)
        if problem:  # never parsed by the request models: no recursion, no error per item
            log.info("refused request %s: body: %s", path, problem)
            detail = [{"type": "json_invalid", "loc": [], "msg": problem}]
            return await json_error(400, f"body: {problem}", detail=detail)(scope, receive, send)
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
        if self._make_shared_slots is not None:
            self._shared_slots, self._make_shared_slots = self._make_shared_slots(), None
        if self._shared_slots is not None:  # the server's bound, counted over all its workers
            if not self._shared_slots.try_acquire():
                return await self._busy(scope, replay, send)
            try:
                return await self.app(scope, replay, _ErrorReshaper(send))
            finally:
                self._shared_slots.release()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        if self._slots.locked():  # a slot is taken only once the whole body is here
            return await self._busy(scope, replay, send)
        async with self._slots:
            await self.app(scope, replay, _ErrorReshaper(send))

    async def _busy(self, scope, receive, send):
        return await json_error(429, "too many requests in flight (serving.max_concurrency)", {"Retry-After": "1"})(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        limit = self.max_body_bytes / (1024 * 1024)
        response = json_error(413, f"request body larger than {limit:g} MiB", {"Connection": "close"})
        await response(scope, receive, send)

    async def _openapi_document(self, scope, receive, send):
        if self._openapi is None:
            try:
                self._openapi = json.dumps(self.openapi(), ensure_ascii=False).encode("utf-8")
            except Exception:
                log.exception("cannot build the OpenAPI document")
                return await json_error(500, "cannot build the OpenAPI document")(scope, receive, send)
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


_PLAIN_ERRORS = {404: "not found", 405: "method not allowed"}


class _ErrorReshaper:
    """Rewrites 4xx JSON bodies into `{"error": ..., "detail": [...]}`, and the plain-text 404 and 405 of the
    routes outside the API into the same shape (naming `request`); gives 429/503 a `Retry-After`;
    everything else passes."""

    def __init__(self, send, request: str = ""):
        self.send = send
        self.request = request
        self.start: dict | None = None
        self.plain: int | None = None  # status of a plain-text error being replaced
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
            if status in _PLAIN_ERRORS:
                self.start, self.plain = message, status
                return
            return await self.send(message)
        if self.start is None or message["type"] != "http.response.body":
            return await self.send(message)
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        if self.plain is not None:
            body = json.dumps({"error": f"{_PLAIN_ERRORS[self.plain]}: {self.request}", "detail": []}, ensure_ascii=False).encode("utf-8")
            headers = [(k, v) for k, v in self.start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
            headers.append((b"content-type", b"application/json"))
        else:
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
