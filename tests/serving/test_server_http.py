"""A real `bentoml serve` (default config, model from a BentoML store written by export_bento),
called over HTTP on 127.0.0.1."""

from __future__ import annotations

import re

import subprocess

import httpx
import pytest

from tests.serving.conftest import conversation, dumps, post_raw

pytestmark = pytest.mark.server


def test_health_endpoints(http):
    assert http.get("/livez").status_code == 200
    assert http.get("/readyz").status_code == 200
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert "bentoml_service_request_total" in metrics.text or "bentoml_service_request_in_progress" in metrics.text
    spec = http.get("/docs.json").json()
    assert {"/classify", "/score_conversation", "/flag"} <= set(spec["paths"])


def test_classify(http):
    response = http.post("/classify", json={"messages": ["在吗", "", "有货我就拍"]})
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["name"] == "buyer-intent" and body["model"]["version"] == "local"
    assert [r["intent"] for r in body["results"]][1] == "other"
    first = body["results"][0]
    assert set(first) == {"intent", "confidence", "top_intents", "fallback", "purchase_intent", "purchase_score"}
    assert len(first["top_intents"]) == 3
    metrics = http.get("/metrics").text
    assert "buyer_intent_batch_messages_count" in metrics and "buyer_intent_messages_total" in metrics
    # the label-free accuracy estimate of live traffic (pipeline.drift), from every worker's files
    assert "buyer_intent_messages_confident_total" in metrics
    assert re.search(r"^buyer_intent_validation_accuracy(\{[^}]*\})? 0\.\d+", metrics, re.M), metrics[-2000:]


def test_score_conversation_and_flag(http):
    response = http.post("/score_conversation", json={"conversation": conversation()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "buyer-intent"
    assert {"purchase_score", "expressed_purchase_intent", "lost", "nudge", "evidence", "open_concern", "suggested_nudge"} <= set(body)
    assert body["lost"] is True and "13812345678" not in body["evidence"]

    chats = [conversation(f"c{i}", buyer_id=f"b{i}", shop_id="s1") for i in range(3)]
    response = http.post("/flag", json={"conversations": chats})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["conversations"] == 3 and body["flagged"] == len(body["rows"])
    assert sum(body["reasons"].values()) == 3
    for row in body["rows"]:
        assert list(row) == [
            "conversation_id", "buyer_id", "shop_id", "category", "purchase_score", "evidence",
            "open_concern", "suggested_nudge", "nudge_text", "priority", "send_after",
        ]
    # both endpoints' buyer messages count in the label-free estimate, over the workers' files
    metrics = http.get("/metrics").text
    for endpoint in ("score_conversation", "flag"):
        counted = re.search(rf'^buyer_intent_messages_scored_total\{{endpoint="{endpoint}"\}} (\S+)', metrics, re.M)
        assert counted and float(counted.group(1)) >= 2, metrics[-2000:]


BAD_REQUESTS = [
    # (path, body, content type, status, words in the error)
    ("/classify", dumps({"messages": "在吗"}), "application/json", 400, ["messages", "array"]),
    ("/classify", dumps({"messages": [1, 2]}), "application/json", 400, ["messages.0", "string"]),
    ("/classify", dumps({}), "application/json", 400, ["messages", "required"]),
    ("/classify", dumps({"messages": ["在吗"] * 1001}), "application/json", 400, ["messages", "1000"]),
    ("/classify", dumps({"messages": ["好" * 2001]}), "application/json", 400, ["messages.0", "2000"]),
    ("/classify", b'{"messages": ["\xff\xfe\xfd"]}', "application/json", 400, ["must be UTF-8 JSON"]),
    ("/classify", b"\x89PNG\r\n\x1a\n\x00\x00", "application/json", 400, ["must be UTF-8 JSON"]),
    ("/classify", b'{"messages": ["a"]}', "text/plain", 415, ["application/json"]),
    ("/classify", b"\x80\x04K\x01.", "application/vnd.bentoml+pickle", 415, ["application/json"]),
    ("/score_conversation", dumps({"conversation": {"conversation_id": "x"}}), "application/json", 400, ["conversation.messages", "required"]),
    ("/score_conversation", dumps({"conversation": conversation(ordered="yes")}), "application/json", 400, ["conversation.ordered"]),
    ("/score_conversation", dumps({"conversation": {**conversation(), "messages": conversation()["messages"] * 167}}), "application/json", 400, ["conversation.messages", "500"]),
    ("/flag", dumps({"conversations": {"conversation_id": "x"}}), "application/json", 400, ["conversations", "array"]),
    ("/flag", dumps({"conversations": [conversation()]}), "application/json", 400, ["conversations.0.buyer_id"]),
]


@pytest.mark.parametrize(("path", "body", "content_type", "status", "words"), BAD_REQUESTS)
def test_bad_requests_are_4xx_with_a_reason(server, path, body, content_type, status, words):
    response = post_raw(server.url, path, body, content_type)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error, error


def test_huge_body_is_413_and_not_read(server):
    body = b'{"messages": ["' + b"a" * (17 * 1024 * 1024) + b'"]}'
    try:
        response = post_raw(server.url, "/classify", body)
        assert response.status_code == 413
    except httpx.WriteError:
        pass  # the server answered 413 and closed before the client finished sending


def test_the_server_keeps_serving_after_bad_input(server, http):
    for path, body, content_type, *_ in BAD_REQUESTS:
        post_raw(server.url, path, body, content_type)
    assert http.get("/livez").status_code == 200
    assert http.post("/classify", json={"messages": ["在吗"]}).status_code == 200
    assert server.process.poll() is None
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert "13812345678" not in log  # buyer text is never logged


def test_a_tampered_model_stops_startup_with_the_reason(tampered_server):
    try:
        tampered_server.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the server kept running with a tampered model")
    assert tampered_server.process.returncode != 0
    log = tampered_server.log()
    assert "cannot start" in log and "integrity check" in log and "SHA-256" in log, log[-2000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{tampered_server.url}/readyz", timeout=2)


def test_keepalive_connection_is_closed_after_its_share_of_requests(server):
    """serving.keepalive_requests (default 100): the 100th answer on one connection says `Connection:
    close`; the client reconnects and is served (so new connections can land on another worker)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        headers = [client.post("/classify", json={"messages": ["在吗"]}).headers.get("connection") for _ in range(100)]
        again = client.post("/classify", json={"messages": ["在吗"]})
    assert headers[-1] == "close"
    assert "close" not in headers[:-1]
    assert again.status_code == 200 and again.headers.get("connection") != "close"
