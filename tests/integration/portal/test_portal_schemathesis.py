"""Property-based API testing: schemathesis drives /api/v1 from its own OpenAPI document.

Hypothesis is driven directly (not through schemathesis' pytest plugin, whose lazy
fixture loader does not work with pytest 9), one strategy per documented operation.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sqlalchemy import select

from app.db import session_scope
from app.models import User
from app.portal.security import new_api_token
from tests.integration.portal.held import decide, http_op, sql_op

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def admin_token(scenario) -> str:
    with session_scope() as s:
        admin = s.scalars(select(User).where(User.email == "admin@example.com")).one()
        token, admin.api_token_hash = new_api_token()
    # Something to list and vote on.
    decide(sql_op("UPDATE invoices SET paid = true WHERE id = 1"), hold=0)
    decide(http_op("POST", "/v1/refunds"), hold=0)
    return token


def test_api_has_no_server_errors_and_keeps_its_schema(app, admin_token):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    headers = {"Authorization": f"Bearer {admin_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 15  # 13 + the two access-request operations
    calls = {"n": 0}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            calls["n"] += 1
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
    assert calls["n"] >= 15 * 10
