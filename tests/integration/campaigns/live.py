"""Helpers for campaign tests against a running proxy or relay and its suite store."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

from sqlalchemy import select

from app.db import session_scope
from app.identity import issue_token
from app.models import Campaign, Connection, Grant, ServiceAccount
from app.versions import bump_version


def add_account(connection: str, prefix: str = "reviewed") -> tuple[str, str]:
    """A new service account with a grant on `connection` and a token: (name, token)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        conn = s.scalars(select(Connection).where(Connection.name == connection)).one()
        sa = ServiceAccount(name=name)
        s.add(sa)
        s.add(Grant(service_account=sa, connection=conn, source="portal", created_by="test"))
        s.flush()
        bump_version(s)
        token = issue_token(s, name, timedelta(hours=2)).token
    # The promise is "within a second": until then a proxy or relay may still decide with
    # the policy before this grant, and refuse (and record) the account's first request.
    time.sleep(1.0)
    return name, token


def add_campaign(connection: str, service_account: str, reviewers: str = "owner") -> str:
    name = f"review-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        s.add(Campaign(name=name, scope={"connections": [connection], "service_accounts": [service_account]},
                       reviewers=reviewers, schedule="0 9 1 1 *", duration_seconds=7 * 86400, on_deadline="revoke"))
    return name
