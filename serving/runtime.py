"""Which model the service runs, checking it before anything is served, and adaptive batching.

Model selection (first match wins):
  * `BUYER_INTENT_MODEL`: a local bundle directory or a `models:/` URI / version number, resolved with
    `pipeline.inference.resolve_model` (development and tests);
  * `BUYER_INTENT_BENTO_MODEL`: a BentoML model tag written by `buyer-intent export-bento`
    (default `buyer-intent:latest`); its bundle is checked against the SHA-256 recorded at export.

`preflight` checks the files (every SHA-256 of the manifest, the registry's models checksum and the
skops types) without loading the model: the service runs it before its server starts, so a model
that fails its integrity check stops `bentoml serve` with the reason instead of being served.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bundle import MODELS_FILE, TRUSTED_TYPES, ModelBundle, ModelIntegrityError, load_bundle, verify_bundle
from pipeline.inference import ModelNotFoundError, Predictor, default_registry, resolve_model

log = logging.getLogger("bentoml.buyer_intent")  # under "bentoml": the server's log handlers and levels apply

MODEL_ENV = "BUYER_INTENT_MODEL"
BENTO_MODEL_ENV = "BUYER_INTENT_BENTO_MODEL"
DEFAULT_BENTO_MODEL = "buyer-intent:latest"
BUNDLE_SUBDIR = "bundle"  # pipeline.tracking.bento stores the bundle in this sub-directory
TOP_K = 3


class ServingStartupError(RuntimeError):
    """The service cannot start: no model, or a model that fails its integrity check."""


@dataclass(frozen=True)
class ModelSource:
    directory: Path
    name: str  # registered MLflow name
    version: str  # registered MLflow version ("local" for a bundle directory)
    expected_seal: str | None  # the bundle's seal recorded outside it (registry tag / BentoML metadata)
    origin: str  # what was asked for: a path, a models:/ URI or a BentoML tag




def source_from_bento_model(stored: Any) -> ModelSource:
    """A BentoML stored model written by `pipeline.tracking.bento.export_bento`."""
    metadata = stored.info.metadata
    missing = [key for key in ("mlflow_name", "mlflow_version", "bundle_seal") if key not in metadata]
    if missing:
        raise ServingStartupError(
            f"BentoML model {stored.tag} was not written by `buyer-intent export-bento` (metadata lacks {', '.join(missing)})"
        )
    return ModelSource(
        Path(stored.path) / BUNDLE_SUBDIR,
        str(metadata["mlflow_name"]),
        str(metadata["mlflow_version"]),
        str(metadata["bundle_seal"]),
        str(stored.tag),
    )


def locate_model() -> ModelSource:
    """The model named by the environment (see the module docstring)."""
    reference = os.environ.get(MODEL_ENV)
    if reference:
        try:
            resolved = resolve_model(reference, default_registry())
        except ModelNotFoundError as exc:
            raise ServingStartupError(f"{MODEL_ENV}={reference}: {exc}") from exc
        return ModelSource(resolved.directory, resolved.name, resolved.version, resolved.expected_seal, reference)
    import bentoml
    from bentoml.exceptions import NotFound

    tag = os.environ.get(BENTO_MODEL_ENV) or DEFAULT_BENTO_MODEL
    try:
        stored = bentoml.models.get(tag)
    except NotFound as exc:
        raise ServingStartupError(
            f"no BentoML model {tag!r} ({exc}); run `buyer-intent export-bento` to import the champion, "
            f"or set {MODEL_ENV} to a model directory"
        ) from exc
    return source_from_bento_model(stored)


def preflight(source: ModelSource) -> dict[str, Any]:
    """Check the model files without loading them; returns the manifest. Raises ServingStartupError."""
    try:
        manifest = verify_bundle(source.directory, source.expected_seal)
        import skops.io as sio

        unknown = set(sio.get_untrusted_types(file=source.directory / MODELS_FILE)) - TRUSTED_TYPES
        if unknown:
            raise ModelIntegrityError(f"{source.directory / MODELS_FILE}: contains types that are not allowed: {sorted(unknown)}")
    except ModelIntegrityError as exc:
        raise ServingStartupError(f"model {source.origin} failed its integrity check, not serving it: {exc}") from exc
    except Exception as exc:  # unreadable zip, permissions ...
        raise ServingStartupError(f"model {source.origin} cannot be read, not serving it: {type(exc).__name__}: {exc}") from exc
    return manifest


def load_verified(source: ModelSource) -> ModelBundle:
    try:
        bundle = load_bundle(source.directory, source.expected_seal)
    except ModelIntegrityError as exc:
        raise ServingStartupError(f"model {source.origin} failed its integrity check, not serving it: {exc}") from exc
    bundle.manifest["name"] = source.name
    bundle.manifest["version"] = source.version
    return bundle


# ------------------------------------------------------------------------------------ predictions


def message_results(predictor: Predictor, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Per message: intent, confidence, top intents, fallback, purchase intent and score (plain dicts)."""
    if not texts:
        return []
    columns = predictor.predict_arrays(list(texts), top_k=TOP_K)
    intents = columns["intent"].tolist()
    confidence = columns["intent_confidence"].tolist()
    fallback = columns["fallback"].tolist()
    purchase = columns["purchase_intent"].tolist()
    score = columns["purchase_score"].tolist()
    top = columns["top"]
    return [
        {
            "intent": intents[i],
            "confidence": confidence[i],
            "top_intents": [{"intent": label, "score": value} for label, value in top[i]],
            "fallback": bool(fallback[i]),
            "purchase_intent": bool(purchase[i]),
            "purchase_score": score[i],
        }
        for i in range(len(intents))
    ]


class AdaptiveBatcher:
    """Adaptive batching of message lists from concurrent requests.

    While the model works on one batch, new requests queue; the next batch takes every queued request
    (whole requests, up to `max_batch_messages` messages; a larger single request goes alone). Under
    light load a request is predicted at once (no waiting window); under heavy load batches grow with
    the arrival rate, so the per-call overhead of the model is shared. Requests whose caller has gone
    (timeout, disconnect) are dropped from the queue before they cost model time.
    """

    def __init__(
        self,
        predict: Callable[[list[str]], list[Any]],
        executor: ThreadPoolExecutor,
        max_batch_messages: int,
        on_batch: Callable[[int, list[Any], float], None] | None = None,
    ):
        self._predict = predict
        self._executor = executor
        self.max_batch_messages = max_batch_messages
        self._on_batch = on_batch
        self._queue: collections.deque[tuple[list[str], asyncio.Future]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (in-process tests)
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._queue = collections.deque()
            self._task = None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="buyer-intent-batcher")

    async def submit(self, texts: list[str]) -> list[Any]:
        if not texts:
            return []
        self._ensure_worker()
        future: asyncio.Future = self._loop.create_future()
        self._queue.append((texts, future))
        self._wakeup.set()
        return await future

    def _next_batch(self) -> list[tuple[list[str], asyncio.Future]]:
        batch: list[tuple[list[str], asyncio.Future]] = []
        size = 0
        while self._queue:
            texts, future = self._queue[0]
            if future.done():  # cancelled by a timeout or a disconnect
                self._queue.popleft()
                continue
            if batch and size + len(texts) > self.max_batch_messages:
                break
            self._queue.popleft()
            batch.append((texts, future))
            size += len(texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while batch := self._next_batch():
                flat = [text for texts, _ in batch for text in texts]
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self._executor, self._predict, flat)
                except Exception as exc:  # handed to every waiting request; the batcher keeps running
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                if self._on_batch is not None:
                    self._on_batch(len(batch), results, time.perf_counter() - started)
                start = 0
                for texts, future in batch:
                    if not future.done():
                        future.set_result(results[start : start + len(texts)])
                    start += len(texts)


class ModelRuntime:
    """The loaded model, the one thread that runs it, and its readiness.

    `start()` loads and warms the model (jieba dictionaries included) in the model thread; `ready`
    turns true when that is done. Every model call runs in that single thread, so the predictor and
    the tokenizers are never used concurrently and CPU work is not interleaved with the event loop.
    """

    def __init__(self, source: ModelSource, max_batch_messages: int, on_batch: Callable[[int, list[Any], float], None] | None = None):
        self.source = source
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buyer-intent-model")
        self.batcher = AdaptiveBatcher(self._classify_sync, self.executor, max_batch_messages, on_batch)
        self.predictor: Predictor | None = None
        self.bundle: ModelBundle | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self.load_seconds: float | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def start(self):
        """Load and warm up in the model thread; returns the future (the service does not wait on it)."""
        return self.executor.submit(self._load_and_warm)

    def _load_and_warm(self) -> None:
        started = time.perf_counter()
        try:
            bundle = load_verified(self.source)
            predictor = Predictor(bundle)
            predictor.warm_up()  # jieba dictionary + user words, feature and model code paths
            message_results(predictor, ["在吗", "", "有货我就拍 [订单x] 13800000000"])
            self.bundle, self.predictor = bundle, predictor
            self.warm_up_hook(predictor)
        except BaseException as exc:  # reported by /livez and /readyz, logged once
            self.error = exc
            log.error("buyer-intent model %s could not be loaded: %s", self.source.origin, exc)
            raise
        # The model is ~10^5 long-lived Python objects; a full garbage collection walks them all
        # (~0.1 s), which showed up as p99 latency spikes. Move everything alive now out of the
        # collector's reach; objects allocated while serving are collected as usual.
        gc.collect()
        gc.freeze()
        self.load_seconds = time.perf_counter() - started
        self._ready.set()
        log.info("buyer-intent model %s version %s ready in %.1f s", self.source.name, self.source.version, self.load_seconds)

    def warm_up_hook(self, predictor: Predictor) -> None:
        """Extra warm-up (conversation scoring) set by the service."""

    def _classify_sync(self, texts: list[str]) -> list[dict[str, Any]]:
        return message_results(self.predictor, texts)

    async def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        return await self.batcher.submit(texts)

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run `func(*args)` in the model thread (conversation scoring, flagging)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
