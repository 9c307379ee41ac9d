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
