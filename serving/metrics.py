"""The service's own Prometheus metrics: batch sizes and model time per call, messages by intent, and
decisions by endpoint and reason."""

from __future__ import annotations

import collections
from typing import Any

_METRICS: dict[str, Any] = {}


def metrics() -> dict[str, Any]:
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


def observe_batch(requests: int, results: list[dict[str, Any]], seconds: float) -> None:
    """Per model call, not per request: at hundreds of requests a second, metric updates add up."""
    registry = metrics()
    registry["batch_requests"].observe(requests)
    registry["batch_messages"].observe(len(results))
    registry["batch_seconds"].observe(seconds)
    counter = registry["messages"]
    for (intent, fallback), count in collections.Counter((r["intent"], r["fallback"]) for r in results).items():
        counter.labels(intent=intent, fallback="true" if fallback else "false").inc(count)
