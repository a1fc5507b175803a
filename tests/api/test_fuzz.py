"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis).

Every operation gets generated valid and invalid requests, as an admin: no answer may be a 5xx,
and every answer must match the schema (status code, content type, body). Kept to a few examples
per operation so the default run stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from apitools import ADMIN_TOKEN, controller_class, make_config
from hypothesis import HealthCheck, settings
from schemathesis import checks

from corral.api.server import BackgroundServer


@pytest.fixture(scope="module")
def served() -> Iterator[BackgroundServer]:
    with BackgroundServer(make_config(), factory=controller_class().create) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(served: BackgroundServer) -> Any:
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
        timeout=10,
    )
