"""The team's API against its own OpenAPI description, with schemathesis: generated requests
(valid and not) to every operation, bounded; no server error, and every answer (status,
headers, body) as the description says.

Driven through schemathesis's Python API rather than its pytest plugin, whose lazy fixture
loader does not work with pytest 9 (it reads a node attribute pytest 9 removed)."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as bounded
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():  # schemathesis calls ASGI apps through Starlette's TestClient
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    import starlette.testclient  # noqa: F401

import schemathesis  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

from storage.agents import add_agent, create_token  # noqa: E402
from tests.test_customer_area import ingest  # noqa: E402
from web.app import create_app  # noqa: E402

EXAMPLES = 25  # per operation: bounded, the suite's time matters
# A request the description allows may still be refused for what it names or when: an agent
# or application that does not exist (422), a ticket changed since its version (412), an
# impossible transition (409). Never a server error (another check) nor 400.
CONFIG = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
    "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429"]}}})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_operation_answers_as_described(parts, settings):
    add_agent(parts.engine, name="Luis Gil", email="luis@soporte.example", role="admin")
    token = create_token(parts.engine, "luis@soporte.example", "schemathesis").secret
    ingest(parts, "apple-mail-screenshot-es.eml")  # a ticket (1001) with a file to read
    schema = schemathesis.openapi.from_asgi(
        "/api/openapi.json", create_app(settings, parts.engine, parts.workflow),
        config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        @given(case=operation.as_strategy())
        @bounded(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def check(case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"})

        try:
            check()
        except Exception as failure:
            raise AssertionError(f"{operation.method.upper()} {operation.path}") from failure
