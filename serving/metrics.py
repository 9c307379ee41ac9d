"""The service's own Prometheus metrics: batch sizes and model time per call, messages by intent, and
decisions by endpoint and reason; and what the label-free accuracy estimate of live traffic needs
(`pipeline.drift`): per endpoint, `rate(buyer_intent_messages_confident_total) / rate(buyer_intent_messages_scored_total)`
estimates the intent accuracy on its buyer messages, to read against `buyer_intent_validation_accuracy` (alert on the fall)."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pipeline.drift import MANIFEST_KEY, threshold_of
from serving.conversations import reason_counts

if TYPE_CHECKING:
    from pipeline.nudge import Decision

_METRICS: dict[str, Any] = {}
_ACCURACY_THRESHOLD: dict[str, float | None] = {"value": None}  # the loaded model's ATC threshold (None: no record)


def metrics() -> dict[str, Any]:
    """The service's own Prometheus metrics, created once per process on first use: prometheus_client
    must be imported after the worker has set PROMETHEUS_MULTIPROC_DIR (BentoML's /metrics collects
    every worker's files from there), so not at module import."""
    if not _METRICS:
        from prometheus_client import Counter, Gauge, Histogram

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
            scored=Counter(
                "buyer_intent_messages_scored", "buyer messages the model read, by endpoint (/classify: every message)", ["endpoint"]
            ),
            confident=Counter(
                "buyer_intent_messages_confident",
                "buyer messages above the model's recorded ATC confidence threshold, by endpoint: over "
                "buyer_intent_messages_scored_total, the estimated intent accuracy (no labels; optimistic when the shift is large)",
                ["endpoint"],
            ),
            validation_accuracy=Gauge(
                "buyer_intent_validation_accuracy", "the loaded model's intent accuracy on its validation messages",
                multiprocess_mode="max",
            ),
        )
    return _METRICS


def observe_model(manifest: Mapping[str, Any]) -> None:
    """Once the model is loaded: its ATC threshold for `observe_batch`, its validation accuracy as a gauge."""
    _ACCURACY_THRESHOLD["value"] = threshold_of(manifest)
    if (record := manifest.get(MANIFEST_KEY)) is not None:
        metrics()["validation_accuracy"].set(float(record["validation_accuracy"]))


def observe_batch(requests: int, results: list[dict[str, Any]], seconds: float) -> None:
    """Per model call, not per request: at hundreds of requests a second, metric updates add up."""
    registry = metrics()
    registry["batch_requests"].observe(requests)
    registry["batch_messages"].observe(len(results))
    registry["batch_seconds"].observe(seconds)
    counter = registry["messages"]
    for (intent, fallback), count in collections.Counter((r["intent"], r["fallback"]) for r in results).items():
        counter.labels(intent=intent, fallback="true" if fallback else "false").inc(count)
    registry["scored"].labels(endpoint="classify").inc(len(results))
    if (threshold := _ACCURACY_THRESHOLD["value"]) is not None:
        registry["confident"].labels(endpoint="classify").inc(sum(1 for r in results if r["confidence"] > threshold))


def observe_decisions(endpoint: str, decisions: Sequence[Decision]) -> None:
    """Per /score_conversation or /flag request: its decisions by reason, and its buyer messages for the estimate
    (`pipeline.nudge.decide` counts the confident ones with the same threshold `buyer-intent flag` uses)."""
    registry = metrics()
    for reason, count in reason_counts(decisions).items():
        registry["decisions"].labels(endpoint=endpoint, reason=reason).inc(count)
    registry["scored"].labels(endpoint=endpoint).inc(sum(d.buyer_messages for d in decisions))
    registry["confident"].labels(endpoint=endpoint).inc(sum(d.confident_buyer_messages for d in decisions))
