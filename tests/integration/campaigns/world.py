"""A small world for campaign tests: a policy, grants of known age, recorded sessions."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from app.db import session_scope
from app.inventory import apply_policy
from app.models import Grant, RecordedSession, SessionEvent, ServiceAccount
from app.policy import load_policy

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)  # every test's "now" is T0 plus something

POLICY = """
version: 1
service_accounts:
  - {name: reader}
  - {name: writer}
  - {name: idle}
  - {name: fresh}
  - {name: stale}
users:
  - {email: owner@example.com, groups: [dba], roles: [approver]}
  - {email: sec@example.com, groups: [security], roles: [approver]}
  - {email: other@example.com, groups: [web], roles: [approver]}
  - {email: admin@example.com, roles: [admin]}
connections:
  - {name: db, type: postgres, address: "127.0.0.1:5432", database: x, username: u, owner: owner@example.com}
  - {name: api, type: http, hosts: [api.example.test], owner: "group:web"}
grants:
  - {service_account: reader, connection: db}
  - {service_account: writer, connection: db}
  - {service_account: idle, connection: db}
  - {service_account: fresh, connection: db}
  - {service_account: stale, connection: api}
campaigns:
  - name: quarterly
    schedule: "0 9 1 */3 *"
    duration: 8d
    remind_every: 2d
    on_deadline: revoke
  - name: api-review
    scope: {connections: [api]}
    schedule: "0 10 * * mon"
    duration: 4d
    on_deadline: keep
  - name: escalating
    scope: {connections: [db], service_accounts: [idle]}
    reviewers: "group:dba"
    schedule: "0 9 1 1 *"
    duration: 4d
    on_deadline: "escalate:security"
"""


def build(now: datetime = T0) -> None:
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY), actor="test", environ={})
        ages = {"reader": 200, "writer": 200, "idle": 200, "fresh": 3, "stale": 200}
        for g in s.scalars(select(Grant)):
            g.created_at = now - timedelta(days=ages[g.service_account.name])
        from app.models import Campaign

        for c in s.scalars(select(Campaign)):
            c.created_at = now - timedelta(days=400)


def session(sa: str, conn: str, started: datetime, events: list[tuple[str, dict]], protocol: str = "postgres") -> str:
    """A recorded session as the relay/proxy writes it (events: (kind, data), one second apart)."""
    sid = str(uuid.uuid4())
    with session_scope() as s:
        s.add(RecordedSession(id=sid, protocol=protocol, connection=conn, service_account=sa, started_at=started,
                              ended_at=started + timedelta(seconds=len(events) + 1), event_count=len(events)))
        s.flush()
        for i, (kind, data) in enumerate(events, 1):
            s.add(SessionEvent(session_id=sid, seq=i, t=float(i), kind=kind,
                               data=json.dumps(data, separators=(",", ":"))))
    return sid


def stmt(sql: str, tag: str) -> tuple[str, dict]:
    return "output", {"sql": sql, "ms": 0.3, "tag": tag}


def deny(sql: str, kind: str = "write") -> tuple[str, dict]:
    return "decision", {"action": "deny", "status": "denied", "rule": "r", "kind": kind, "operation": sql}


def grant_id(sa: str, conn: str) -> int:
    with session_scope() as s:
        return s.scalars(select(Grant.id).join(ServiceAccount).where(ServiceAccount.name == sa)).first()
