"""schemathesis against the server's own OpenAPI schema: generated requests to every route never get
a 5xx, and answers match the schema where it declares them. Bounded: a few examples per route.

The operations are run one by one with hypothesis (schemathesis's pytest fixture loader does not
work with pytest 9: it sets a node attribute pytest no longer has)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

EXAMPLES_PER_ROUTE = 10
NOT_FUZZED = ("/interrupt", "/skip")  # they stop other tests' running jobs


def bounded(case) -> None:
    """Small images and few steps where the client leaves them out (larger ones must be a clean 4xx)."""
    if isinstance(case.body, dict):
        case.body.setdefault("size", "64x64")
        case.body.setdefault("width", 64)
        case.body.setdefault("height", 64)


def test_no_5xx_and_answers_match_the_schema(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [operation for operation in operations if not operation.path.endswith(NOT_FUZZED)]
    assert any(op.path == "/v1/images/generations" for op in fuzzed)
    calls = []
    for operation in fuzzed:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case) -> None:
            bounded(case)
            response = case.call_and_validate(
                base_url=server.url, checks=[not_a_server_error, response_schema_conformance], timeout=120
            )
            calls.append((case.operation.label, response.status_code))

        check()
    assert {label for label, _ in calls} == {operation.label for operation in fuzzed}
    assert any(status == 200 for label, status in calls if label == "POST /v1/images/generations")
