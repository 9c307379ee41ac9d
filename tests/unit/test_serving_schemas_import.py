"""Importing serving.schemas does no work: the config is read on first use, and the request models are
built from it then (serving.service asks for them where BentoML needs them, at its class definition)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import serving.schemas as schemas
from serving.schemas import ModelInfo, NudgeRow, ScoreResponse  # config-free models
assert schemas.serving_config.cache_info().currsize == 0, "the config was read at import"
try:
    schemas.request_models()
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_importing_the_schemas_reads_no_config(tmp_path):
    missing = tmp_path / "no-such-config.yaml"
    env = {"BUYER_INTENT_CONFIG": str(missing), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no-such-config.yaml" in result.stdout  # read (and refused) on first use, not at import


def test_request_models_carry_the_configured_limits(tmp_path, monkeypatch):
    import yaml

    from serving import schemas

    config = tmp_path / "serving.yaml"
    config.write_text(yaml.safe_dump({"serving": {"max_messages": 7, "max_chars": 30, "max_turns": 5, "max_conversations": 3}}), encoding="utf-8")
    monkeypatch.setenv("BUYER_INTENT_CONFIG", str(config))
    for cached in (schemas.serving_config, schemas.nudge_policy, schemas.request_models):
        cached.cache_clear()
    try:
        models = schemas.request_models()
        messages = models.ClassifyRequest.model_json_schema()["properties"]["messages"]
        assert messages["maxItems"] == 7 and messages["items"]["maxLength"] == 30
        assert models.FlagRequest.model_json_schema()["properties"]["conversations"]["maxItems"] == 3
        assert models.Conversation.__name__ == "Conversation" and schemas.Conversation is models.Conversation
    finally:
        for cached in (schemas.serving_config, schemas.nudge_policy, schemas.request_models):
            cached.cache_clear()


def test_the_published_schema_refuses_what_the_validator_refuses():
    """main published `conversation_id` as any string of length >= 1, then answered 400 to "   " (the value is
    stripped before the length check): the schema now says so, with a pattern JSON Schema searches for."""
    import re

    import pydantic

    from serving import schemas

    models = schemas.request_models()
    schema = models.FlagRequest.model_json_schema()
    conversation = schema["$defs"]["FlagConversation"]["properties"]
    for field in ("conversation_id", "buyer_id", "shop_id"):
        pattern = conversation[field]["pattern"]
        for value in ("   ", "\t\u3000 ", "c-1", " c 1 "):
            published = re.search(pattern, value) is not None
            request = {"conversations": [{"conversation_id": "c", "buyer_id": "b", "shop_id": "s",
                                          "messages": [{"role": "buyer", "text": "在吗", "sent_at": "2026-01-01T10:00:00+08:00"}],
                                          field: value}]}
            try:
                models.FlagRequest.model_validate(request)
                accepted = True
            except pydantic.ValidationError:
                accepted = False
            assert accepted == published, (field, value)
