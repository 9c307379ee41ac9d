"""The service class in-process: its ASGI app (BentoML's middlewares included) behind a TestClient,
with the test config (limits: 50 messages, 200 characters, 20 turns, 10 conversations, 1 MiB bodies,
2 s timeout, 6 requests in flight)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from tests.serving.conftest import conversation, dumps

PROBES = ["在吗", "有货我就拍", "", "给你差评", "能便宜点吗 便宜我就买了", "   ", "订单123456789012345678 怎么还没发"]


def post(client, path, payload=None, body=None, content_type="application/json"):
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=dumps(payload) if body is None else body, headers=headers)


# ------------------------------------------------------------------------------------------- health


def test_probes_and_docs(app_client):
    assert app_client.get("/livez").status_code == 200
    assert app_client.get("/readyz").status_code == 200
    docs = app_client.get("/docs.json")
    assert docs.status_code == 200
    spec = docs.json()
    for route in ("/classify", "/score_conversation", "/flag"):
        responses = spec["paths"][route]["post"]["responses"]
        assert {"200", "400", "413", "415", "429", "503", "504"} <= set(responses)
    lost = spec["components"]["schemas"]["ScoreResponse"]["properties"]["lost"]
    assert lost.get("nullable") is True and "anyOf" not in lost


def test_the_openapi_document_names_the_project_and_its_examples_are_answered(app_client):
    """Swagger shows the project's title, version and description, and a Chinese example per route that
    the service answers (a browser-free check of the examples)."""
    import importlib.metadata

    spec = app_client.get("/docs.json").json()
    assert spec["info"]["title"] == "buyer-intent" and spec["info"]["version"] == importlib.metadata.version("buyer-intent")
    assert "催拍" in spec["info"]["description"]
    for route in ("/classify", "/score_conversation", "/flag"):
        example = spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["example"]
        assert re.search(r"[\u4e00-\u9fff]", json.dumps(example, ensure_ascii=False)), route
        response = post(app_client, route, example)
        assert response.status_code == 200, (route, response.text)


def test_unknown_routes_and_methods_answer_in_the_error_shape(app_client):
    """main answered 404 and 405 in plain text; they now have the API's JSON error shape."""
    missing = app_client.get("/no-such-route")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/json")
    assert missing.json() == {"error": "not found: GET /no-such-route", "detail": []}
    wrong_method = app_client.get("/classify")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method not allowed: GET /classify"
    assert app_client.head("/no-such-route").status_code == 404
    assert app_client.get("/livez").status_code == 200 and app_client.get("/metrics").status_code == 200


def test_a_body_that_is_not_utf8_is_named_as_such(app_client):
    """A GBK-encoded request used to get a JSON syntax error about a code point; it is told what is wrong."""
    body = json.dumps({"messages": ["在吗 有货吗"]}, ensure_ascii=False).encode("gbk")
    response = post(app_client, "/classify", body=body)
    assert response.status_code == 400 and response.json()["error"] == "request body must be UTF-8 JSON"
    assert post(app_client, "/classify", body=body.decode("gbk").encode("utf-8")).status_code == 200


def test_metrics_include_batching(app_client):
    post(app_client, "/classify", {"messages": ["在吗"]})
    text = app_client.get("/metrics").text
    assert "buyer_intent_batch_messages_bucket" in text
    assert "buyer_intent_messages_total" in text


def _metric(text: str, name: str) -> float:
    """A metric's value in Prometheus' text format, summed over its label sets (and worker files)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((f"{name} ", f"{name}{{")))


def test_metrics_carry_the_label_free_accuracy_estimate_of_classify_traffic(app_client, model_dir):
    """pipeline.drift on live traffic: the messages above the model's ATC threshold are counted next to all
    classified messages, and the validation accuracy they are read against is a gauge."""
    from pipeline.bundle import load_bundle
    from pipeline.drift import MANIFEST_KEY
    from pipeline.inference import Predictor

    bundle = load_bundle(model_dir)
    record = bundle.manifest[MANIFEST_KEY]
    texts = PROBES + ["ꙮꙮꙮ", "在吗 有货吗", "我要退货"]
    confident = int((Predictor(bundle).predict(texts)["intent_confidence"] > record["threshold"]).sum())
    assert 0 < confident < len(texts)  # the count tells the two apart
    before = app_client.get("/metrics").text
    assert post(app_client, "/classify", {"messages": texts}).status_code == 200
    after = app_client.get("/metrics").text
    assert _metric(after, "buyer_intent_messages_total") - _metric(before, "buyer_intent_messages_total") == len(texts)
    assert _metric(after, "buyer_intent_messages_confident_total") - _metric(before, "buyer_intent_messages_confident_total") == confident
    classify = 'buyer_intent_messages_scored_total{endpoint="classify"}'
    assert _metric(after, classify) - _metric(before, classify) == len(texts)
    assert _metric(after, "buyer_intent_validation_accuracy") == pytest.approx(record["validation_accuracy"])


# ----------------------------------------------------------------------------------------- classify


def test_classify_matches_the_predictor(app_client, model_dir):
    from pipeline.bundle import load_bundle
    from pipeline.inference import Predictor

    response = post(app_client, "/classify", {"messages": PROBES})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == {"name": "buyer-intent", "version": "local"}
    expected = Predictor(load_bundle(model_dir)).predict(PROBES, top_k=3)
    assert len(body["results"]) == len(PROBES)
    for result, (_, row) in zip(body["results"], expected.iterrows(), strict=True):
        assert result["intent"] == row["intent"]
        assert result["confidence"] == pytest.approx(row["intent_confidence"])
        assert result["fallback"] == bool(row["fallback"])
        assert result["purchase_intent"] == bool(row["purchase_intent"])
        assert result["purchase_score"] == pytest.approx(row["purchase_score"])
        assert [(t["intent"], t["score"]) for t in result["top_intents"]] == [(i, pytest.approx(s)) for i, s in row["top"]]


def test_empty_messages_are_other_with_fallback(app_client):
    body = post(app_client, "/classify", {"messages": ["", " "]}).json()
    for result in body["results"]:
        assert result["intent"] == "other" and result["fallback"] is True and result["top_intents"] == []
    assert post(app_client, "/classify", {"messages": []}).json()["results"] == []


def test_classify_explains_on_request_only(app_client, model_dir):
    """`"explain": true` adds the explanation of pipeline/explain.py per message, PII masked; without it (or with
    false) the response is the one it always was."""
    from pipeline.bundle import load_bundle
    from pipeline.explain import DEFAULT_TOP_K, Explainer

    plain = post(app_client, "/classify", {"messages": PROBES})
    assert plain.status_code == 200
    assert post(app_client, "/classify", {"messages": PROBES, "explain": False}).content == plain.content
    keys = {"intent", "confidence", "top_intents", "fallback", "purchase_intent", "purchase_score"}
    assert all(set(result) == keys for result in plain.json()["results"])

    texts = [*PROBES, "我电话13812345678 有货我就拍"]
    response = post(app_client, "/classify", {"messages": texts, "explain": True})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [{k: r[k] for k in keys} for r in results[: len(PROBES)]] == plain.json()["results"]
    expected = Explainer(load_bundle(model_dir), None).explain(texts, [r["intent"] for r in results], DEFAULT_TOP_K)
    for text, result, want in zip(texts, results, expected, strict=True):
        if want is None:  # empty once normalised: not scored, nothing to explain
            assert "explanation" not in result and result["fallback"], text
            continue
        explanation = result["explanation"]
        assert explanation == want
        assert explanation["intent"]["label"] == result["intent"]
        for part in (explanation["intent"], explanation["purchase"]):
            listed = sum(item["contribution"] for item in part["ngrams"])
            assert part["intercept"] + listed + part["rest"] == pytest.approx(part["logit"], abs=1e-4)
            assert len(part["ngrams"]) <= DEFAULT_TOP_K
    complaint = results[PROBES.index("给你差评")]["explanation"]["intent"]
    assert complaint["label"] == "complaint" and re.search("差|评", complaint["ngrams"][0]["ngram"]), complaint
    shown = [item["ngram"] for r in results if "explanation" in r for part in r["explanation"].values() for item in part["ngrams"]]
    assert shown and not any(re.search(r"\d", ngram) for ngram in shown), shown  # numbers, phones, order numbers masked
    assert "13812345678" not in json.dumps(results, ensure_ascii=False)

    for bad in ("yes", 1, None):  # strict: only a JSON boolean
        refused = post(app_client, "/classify", {"messages": ["在吗"], "explain": bad})
        assert refused.status_code == 400 and refused.json()["error"].startswith("explain:"), refused.text


def test_concurrent_requests_get_their_own_results(app_client):
    texts = [f"有货我就拍{i}" if i % 2 else f"在吗{i}" for i in range(24)]
    with ThreadPoolExecutor(5) as pool:  # under the test config's max_concurrency (6)
        responses = list(pool.map(lambda t: post(app_client, "/classify", {"messages": [t, t]}), texts))
    single = {t: post(app_client, "/classify", {"messages": [t]}).json()["results"][0] for t in texts}
    for text, response in zip(texts, responses, strict=True):
        assert response.status_code == 200
        assert response.json()["results"] == [single[text], single[text]]


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("payload", "field", "why"),
    [
        ({"messages": "在吗"}, "messages", "valid array"),
        ({"messages": [1, "在吗"]}, "messages.0", "valid string"),
        ({"messages": [None]}, "messages.0", "valid string"),
        ({}, "messages", "Field required"),
        ({"texts": ["在吗"]}, "messages", "Field required"),
        ({"messages": ["在吗"], "top_k": 5}, "top_k", "Extra inputs"),
        ({"messages": ["在吗"] * 51}, "messages", "at most 50 items"),
        ({"messages": ["在吗", "好" * 201]}, "messages.1", "at most 200 characters"),
        (["在吗"], "body", "object"),
    ],
)
def test_invalid_classify_requests_say_which_field_and_why(app_client, payload, field, why):
    response = post(app_client, "/classify", payload)
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith(f"{field}:") and why in body["error"], body
    assert body["detail"] and "input" not in body["detail"][0]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"messages": ["\xff\xfe"]}', "application/json", 400),  # not UTF-8
        (b"\xff\xfe\x00", "application/json", 400),
        (b'{"messages": ["a"', "application/json", 400),  # truncated JSON
        (b"", "application/json", 400),
        (b"messages=a", "application/x-www-form-urlencoded", 415),
        (b"--x\r\n", "multipart/form-data; boundary=x", 415),
        (b"\x80\x03", "application/vnd.bentoml+pickle", 415),
        (b'{"messages": ["a"]}', "text/plain", 415),
    ],
)
def test_unreadable_bodies_are_4xx(app_client, body, content_type, status):
    response = post(app_client, "/classify", body=body, content_type=content_type)
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_huge_bodies_are_refused_unread(app_client):
    response = post(app_client, "/classify", body=b'{"messages": ["' + b"a" * (1024 * 1024 + 10) + b'"]}')
    assert response.status_code == 413
    assert "1 MiB" in response.json()["error"]
    assert post(app_client, "/classify", {"messages": ["在吗"]}).status_code == 200


def test_validation_errors_never_log_buyer_text(app_client, caplog):
    secret = "我的手机13812345678 地址浙江省杭州市余杭区文一西路969号"
    with caplog.at_level(logging.DEBUG):
        assert post(app_client, "/classify", {"messages": [secret * 10]}).status_code == 400
        assert post(app_client, "/classify", {"messages": [secret], "x": secret}).status_code == 400
        assert post(app_client, "/classify", body=('{"messages": ["' + secret + '"').encode()).status_code == 400
    logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert "13812345678" not in logged and "文一西路" not in logged
    assert not any(record.exc_info for record in caplog.records if "invalid request" in record.getMessage())


# ------------------------------------------------------------------------------- timeouts, concurrency


@pytest.fixture()
def slow_model(monkeypatch):
    """Every model call takes `delay[0]` seconds longer."""
    import serving.runtime

    delay = [0.0]
    original = serving.runtime.message_results

    def slow(predictor, texts):
        time.sleep(delay[0])
        return original(predictor, texts)

    monkeypatch.setattr(serving.runtime, "message_results", slow)
    return delay


def test_timeout_gives_504_and_the_server_keeps_serving(app_client, slow_model):
    slow_model[0] = 3.0  # past the test config's 2 s timeout
    started = time.monotonic()
    response = post(app_client, "/classify", {"messages": ["在吗"]})
    assert response.status_code == 504
    assert time.monotonic() - started < 2.9
    slow_model[0] = 0.0
    time.sleep(1.2)  # the model thread finishes the abandoned call
    assert post(app_client, "/classify", {"messages": ["在吗"]}).status_code == 200


def test_past_max_concurrency_requests_get_429(app_client, slow_model):
    slow_model[0] = 0.6
    barrier = threading.Barrier(12)

    def call(_):
        barrier.wait()
        return post(app_client, "/classify", {"messages": ["在吗"]})

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(call, range(12)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(429) >= 1, statuses
    assert set(statuses) <= {200, 429}
    assert all(r.headers.get("retry-after") == "1" for r in responses if r.status_code == 429)  # main sent none
    slow_model[0] = 0.0
    assert post(app_client, "/classify", {"messages": ["在吗"]}).status_code == 200
    assert app_client.get("/livez").status_code == 200  # probes are never refused


@pytest.mark.parametrize("route, payload", [
    ("/classify", {"messages": ["在吗"]}),
    ("/score_conversation", {"conversation": conversation("c-loading")}),
    ("/flag", {"conversations": [conversation("c-loading", buyer_id="b1", shop_id="s1")]}),
])
def test_while_the_model_loads_every_route_answers_503_with_retry_after(app_client, monkeypatch, route, payload):
    import serving.runtime

    monkeypatch.setattr(serving.runtime.ModelRuntime, "ready", property(lambda self: False))
    response = post(app_client, route, payload)
    assert response.status_code == 503 and response.headers.get("retry-after") == "1"
    assert "still loading" in response.json()["error"]
    assert app_client.get("/livez").status_code == 200 and app_client.get("/readyz").status_code == 503
    monkeypatch.undo()
    assert post(app_client, route, payload).status_code == 200


# -------------------------------------------------------------------------------------- conversations


def test_score_conversation_is_the_nudge_decision(app_client, service_module, model_dir):
    from pipeline.bundle import load_bundle
    from pipeline.conversation import ConversationScorer, Turn
    from pipeline.inference import Predictor
    from pipeline.nudge import ConversationInput, decide

    chat = conversation("c-score", category="apparel")
    response = post(app_client, "/score_conversation", {"conversation": chat})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = decide(
        [ConversationInput("c-score", "c-score", "", [Turn(**m) for m in chat["messages"]], "apparel", False)],
        ConversationScorer(Predictor(load_bundle(model_dir))),
        service_module.POLICY,
    )[0]
    assert body["model"] == {"name": "buyer-intent", "version": "local"}
    assert body["purchase_score"] == pytest.approx(expected.purchase_score)
    assert body["expressed_purchase_intent"] == expected.expressed_purchase_intent
    assert (body["lost"], body["nudge"], body["reason"]) == (expected.lost, expected.nudge, expected.reason)
    for key in ("evidence", "open_concern", "suggested_nudge", "nudge_text", "priority", "send_after", "last_message_at",
                "buyer_messages", "confident_buyer_messages"):
        assert body[key] == getattr(expected, key), key
    assert "13812345678" not in json.dumps(body, ensure_ascii=False)  # evidence is masked


def test_score_conversation_unknown_order_is_never_a_nudge(app_client):
    body = post(app_client, "/score_conversation", {"conversation": conversation(ordered=None)}).json()
    assert body["lost"] is None and body["nudge"] is False and body["reason"] == "order_unknown"
    body = post(app_client, "/score_conversation", {"conversation": conversation(ordered=True)}).json()
    assert body["lost"] is False and body["nudge"] is False and body["reason"] == "not_lost"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c["messages"][0].update(role="boss"), "conversation.messages.0.role"),
        (lambda c: c["messages"][1].update(sent_at="yesterday evening"), "conversation.messages.1.sent_at"),
        (lambda c: c["messages"][1].update(sent_at="9999-12-31T23:59:59+08:00"), "conversation.messages.1.sent_at"),  # was a 500
        (lambda c: c["messages"][1].update(sent_at="0001-01-01T10:00:00+08:00"), "conversation.messages.1.sent_at"),
        (lambda c: c["messages"][1].update(sent_at="now"), "conversation.messages.1.sent_at"),
        (lambda c: c["messages"][1].pop("sent_at"), "conversation.messages.1.sent_at"),
        (lambda c: c.update(messages=[]), "conversation.messages"),
        (lambda c: c.update(messages=c["messages"] * 7), "conversation.messages"),  # 21 > 20 turns
        (lambda c: c.update(ordered="no"), "conversation.ordered"),
        (lambda c: c.pop("conversation_id"), "conversation.conversation_id"),
    ],
)
def test_invalid_conversations_say_which_field(app_client, change, field):
    chat = conversation()
    change(chat)
    response = post(app_client, "/score_conversation", {"conversation": chat})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{field}:"), response.json()


def test_flag_needs_buyer_and_shop_and_respects_the_limit(app_client):
    response = post(app_client, "/flag", {"conversations": [conversation()]})
    assert response.status_code == 400
    assert "conversations.0.buyer_id: Field required" in response.json()["error"]
    many = [conversation(f"c{i}", buyer_id=f"b{i}", shop_id="s") for i in range(11)]
    assert "at most 10 items" in post(app_client, "/flag", {"conversations": many}).json()["error"]


def test_flag_rows_equal_the_batch_job_output(app_client, service_module, model_dir, test_config_path, tmp_path):
    """The same conversations through `buyer-intent flag` (pipeline.jobs.flag.run_flag) and through /flag."""
    from pipeline.config import load_config
    from pipeline.jobs.flag import run_flag

    chats = [
        conversation("c1", buyer_id="b1", shop_id="s1", category="apparel"),
        conversation("c2", buyer_id="b1", shop_id="s1", category="apparel"),  # same buyer and shop: one nudge
        conversation("c3", buyer_id="b2", shop_id="s1", category="apparel", ordered=True),
        {**conversation("c4", buyer_id="b3", shop_id="s2", category="beauty"),
         "messages": [{"role": "buyer", "text": "收到是坏的 给你差评", "sent_at": "2026-11-21T10:00:00+08:00"},
                      {"role": "buyer", "text": "有货我就拍", "sent_at": "2026-11-21T10:01:00+08:00"}]},
        {**conversation("c5", buyer_id="b4", shop_id="s2", category="beauty"),
         "messages": [{"role": "buyer", "text": "能便宜点吗 便宜点我就买了", "sent_at": "2026-11-21T23:30:00+08:00"}]},
    ]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in chats) + "\n", encoding="utf-8")
    out = tmp_path / "nudges.jsonl"
    summary = run_flag(path, out, None, str(model_dir), None, load_config(test_config_path), progress=False, workers=1)
    batch = pd.read_json(out, lines=True, dtype=False) if out.stat().st_size else pd.DataFrame()

    before = app_client.get("/metrics").text
    response = post(app_client, "/flag", {"conversations": chats})
    assert response.status_code == 200, response.text
    after = app_client.get("/metrics").text
    body = response.json()
    assert body["conversations"] == summary["conversations"] == 5
    # the label-free estimate of /flag traffic counts what the batch job's summary counts
    scored = _metric(after, 'buyer_intent_messages_scored_total{endpoint="flag"}') - _metric(before, 'buyer_intent_messages_scored_total{endpoint="flag"}')
    confident = (_metric(after, 'buyer_intent_messages_confident_total{endpoint="flag"}')
                 - _metric(before, 'buyer_intent_messages_confident_total{endpoint="flag"}'))
    estimate = summary["accuracy_estimate"]
    assert scored == estimate["buyer_messages"] == summary["messages"]["buyer"] == 9
    assert confident / scored == pytest.approx(estimate["estimated_accuracy"])
    assert body["flagged"] == summary["flagged"] == len(batch)
    assert body["flagged"] >= 1, "the test conversations should produce at least one nudge"
    rows = pd.DataFrame(body["rows"])[list(batch.columns)]
    batch = batch.astype({"purchase_score": float, "priority": int})
    pd.testing.assert_frame_equal(rows.reset_index(drop=True), batch.reset_index(drop=True), check_dtype=False)
    assert body["reasons"].get("duplicate_in_window", 0) == summary["suppressed_one_per_window"]


# ------------------------------------------------------------------------------- batching and startup


def test_adaptive_batching_combines_requests_that_wait():
    from serving.runtime import AdaptiveBatcher

    calls: list[int] = []

    def predict(texts):
        calls.append(len(texts))
        time.sleep(0.05)
        return [f"r:{t}" for t in texts]

    async def scenario():
        batcher = AdaptiveBatcher(predict, ThreadPoolExecutor(1), max_batch_messages=8)
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.sleep(0.01)  # the first call is running
        rest = [asyncio.create_task(batcher.submit([f"{i}x", f"{i}y"])) for i in range(6)]
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert first == ["r:a"]
    assert rest == [[f"r:{i}x", f"r:{i}y"] for i in range(6)]
    assert calls == [1, 8, 4]  # waiting requests share a call, whole requests, at most 8 messages


def test_readiness_waits_for_model_and_jieba(model_dir):
    import pipeline.estimators
    from serving.runtime import ModelRuntime, ModelSource

    runtime = ModelRuntime(ModelSource(model_dir, "buyer-intent", "local", None, str(model_dir)), 16)
    assert not runtime.ready
    runtime.start().result(timeout=120)
    assert runtime.ready and not runtime.failed
    assert runtime.load_seconds is not None
    assert pipeline.estimators._JIEBA_CACHE, "the jieba segmenter is built during warm-up"
    runtime.close()


def test_a_tampered_model_is_refused_before_serving(model_dir, tmp_path):
    from types import SimpleNamespace

    import json
    import shutil

    from pipeline.bundle import bundle_seal
    from serving.runtime import ModelSource, ServingStartupError, preflight, source_from_bento_model
    from tests.serving.conftest import tampered_copy

    bad = tampered_copy(model_dir, tmp_path / "bad")
    with pytest.raises(ServingStartupError, match="integrity check.*SHA-256"):
        preflight(ModelSource(bad, "buyer-intent", "local", None, str(bad)))
    # A BentoML store copy is checked against the SHA-256 recorded at export, too.
    (tmp_path / "stored").mkdir()
    tampered_copy(model_dir, tmp_path / "stored" / "bundle")
    seal = bundle_seal(model_dir)
    stored = SimpleNamespace(
        tag="buyer-intent:local-x", path=str(tmp_path / "stored"),
        info=SimpleNamespace(metadata={"mlflow_name": "buyer-intent", "mlflow_version": "3", "bundle_seal": seal}),
    )
    with pytest.raises(ServingStartupError, match="integrity check"):
        preflight(source_from_bento_model(stored))
    # A stored copy whose manifest thresholds were edited (files intact) is refused by its seal.
    shutil.copytree(model_dir, tmp_path / "edited" / "bundle")
    manifest_path = tmp_path / "edited" / "bundle" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["thresholds"]["purchase"] = 0.0
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    stored_edited = SimpleNamespace(tag="buyer-intent:3-x", path=str(tmp_path / "edited"), info=stored.info)
    with pytest.raises(ServingStartupError, match="seal"):
        preflight(source_from_bento_model(stored_edited))
    # An intact bundle that is not the one registered is refused as well.
    with pytest.raises(ServingStartupError, match="seal"):
        preflight(ModelSource(model_dir, "buyer-intent", "3", "0" * 64, "models:/buyer-intent/3"))


def test_bento_model_versions_name_the_registered_version_and_checksum():
    from pipeline.tracking.bento import bento_version

    sha = "2298584e4b4e96119874bceefa3d0eac68b3ce9d919afdbf4f9db9daff5df1e4"
    assert bento_version("7", sha) == "7-2298584e4b4e"
    assert bento_version("local", sha) == "local-2298584e4b4e"
    assert bento_version("Weird Version/1", sha) == "weird-version-1-2298584e4b4e"


def test_access_log_and_api_tracing_are_off_unless_configured(service_module):
    """serving.access_log / serving.tracing default to false: no per-request log line or span on the API routes."""
    config = service_module.BuyerIntent.config
    assert config["logging"]["access"]["enabled"] is False
    assert set(service_module.API_ROUTES) <= set(config["tracing"]["excluded_urls"])


def test_a_slow_body_gets_408_and_never_holds_a_slot(service_module):
    """main let 100 sockets that sent headers and 12 body bytes hold every slot for 10 s (32/32 got 429)."""
    import asyncio

    calls = []

    async def app(scope, receive, send):
        calls.append(await receive())
        await service_module.json_error(200, "ok")(scope, receive, send)

    guard = service_module.RequestGuard(app, max_body_bytes=1 << 20, max_in_flight=1, body_timeout_s=0.2)
    scope = {"type": "http", "path": "/classify", "method": "POST", "headers": [(b"content-type", b"application/json")]}

    async def stalled_receive():
        if not getattr(stalled_receive, "sent", False):
            stalled_receive.sent = True
            return {"type": "http.request", "body": b'{"messag', "more_body": True}
        await asyncio.sleep(3600)

    async def whole_receive():
        return {"type": "http.request", "body": b'{"messages": ["hi"]}', "more_body": False}

    async def scenario():
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        slow = [guard(dict(scope), stalled_receive, send) for _ in range(3)]
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*slow)
        elapsed = asyncio.get_running_loop().time() - started
        statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
        normal: list[dict] = []

        async def send_normal(message):
            normal.append(message)

        await guard(dict(scope), whole_receive, send_normal)
        return statuses, elapsed, [m["status"] for m in normal if m["type"] == "http.response.start"]

    statuses, elapsed, normal = asyncio.run(scenario())
    assert statuses == [408, 408, 408] and elapsed < 2
    assert normal == [200] and len(calls) == 1  # the slot was free for a request whose body arrived


def test_nudge_list_and_decision_have_one_schema(service_module):
    """The batch job's columns, /flag rows and the /score_conversation response use the Decision's
    field names in the same order, nothing renamed."""
    from dataclasses import fields

    from pipeline.jobs.flag import OUTPUT_COLUMNS
    from pipeline.nudge import NUDGE_COLUMNS, Decision
    from serving.schemas import NudgeRow, ScoreResponse

    assert OUTPUT_COLUMNS == NUDGE_COLUMNS
    assert tuple(NudgeRow.model_fields) == NUDGE_COLUMNS
    decision_fields = [f.name for f in fields(Decision)]
    assert set(NUDGE_COLUMNS) <= set(decision_fields)
    assert [name for name in ScoreResponse.model_fields if name != "model"] == decision_fields
