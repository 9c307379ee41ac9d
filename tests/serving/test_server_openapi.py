"""Schemathesis against the running server's own OpenAPI document (/docs.json): generated valid and
invalid requests for every endpoint (25 of each); no 5xx, and status codes, content types and bodies
as documented.

(`schemathesis.pytest.from_fixture` needs `Node._nodeid`, which pytest 9 no longer has, so the
operations' Hypothesis strategies are driven directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

pytestmark = pytest.mark.server

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="session")
def served_schema(server):
    return schemathesis.openapi.from_url(f"{server.url}/docs.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("route", ["/classify", "/score_conversation", "/flag"])
def test_api_conforms_to_its_openapi_document(served_schema, server, route, mode):
    operation = served_schema[route]["POST"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def check(case):
        case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)

    check()
    assert server.process.poll() is None
