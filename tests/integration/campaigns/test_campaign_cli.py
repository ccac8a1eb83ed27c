"""`airlock campaign` and `airlock access` as users run them: real subprocesses, a real store."""
from __future__ import annotations

import csv
import io
import json

from sqlalchemy import select

from app.db import session_scope
from app.models import AccessRequest, Review
from tests.integration.campaigns import world as w
from tests.integration.test_cli import run


def test_campaign_start_list_status_report(store):
    w.build()
    w.session("writer", "db", w.T0, [w.stmt("insert into t values (1)", "INSERT")])
    out = run("campaign", "start", "quarterly", "--actor", "admin@example.com").stdout
    assert "run 1 started with 5 item(s)" in out
    again = run("campaign", "start", "quarterly", check=False)
    assert again.returncode == 1 and "already has an open run" in again.stderr
    listed = run("campaign", "list").stdout
    assert "quarterly\t0 9 1 */3 *\treviewers owner\ton_deadline revoke" in listed
    assert "escalating" in listed and "on_deadline escalate group:security" in listed
    status = run("campaign", "status", "quarterly").stdout
    assert "0/5 decided" in status and "idle -> db\tpending\treviewer owner@example.com\tsuggest revoke" in status
    data = json.loads(run("campaign", "report", "quarterly", "--format", "json").stdout)
    assert data["started_by"] == "admin@example.com" and len(data["items"]) == 5
    rows = list(csv.DictReader(io.StringIO(run("campaign", "report", "quarterly", "--format", "csv").stdout)))
    assert {r["service_account"] for r in rows} == {"reader", "writer", "idle", "fresh", "stale"}
    unknown = run("campaign", "start", "nope", check=False)
    assert unknown.returncode == 1 and "no campaign named 'nope'" in unknown.stderr


def test_access_request_from_the_cli(store):
    w.build()
    with session_scope() as s:  # revoke idle's grant so it can ask again
        from app.campaigns.decisions import take_grant
        take_grant(s, w.grant_id("idle", "db"), actor="t", reason="t", now=w.T0.replace(year=2030))
    out = run("access", "request", "idle", "db", "--for", "2h", "--reason", "incident 4711",
              "--requested-by", "oncall@example.com").stdout
    assert "access request 1 is pending approval until" in out
    with session_scope() as s:
        req = s.scalars(select(AccessRequest)).one()
        review = s.get(Review, req.review_id)
        assert req.duration_seconds == 7200 and review.groups == ["dba"] and review.status == "pending"
    refused = run("access", "request", "reader", "db", "--for", "2h", "--reason", "x", check=False)
    assert refused.returncode == 1 and "already has access" in refused.stderr
    assert "idle -> db\tpending" in run("access", "list").stdout
