"""Store contents for portal tests, browser tests and the benchmark.

`seed_scenario()` applies a small but complete policy (through `apply_policy`, as
`airlock apply` would), gives the people local passwords, and records an SSH, an SQL
and an HTTP session through the real recorder, the SQL and HTTP ones carrying XSS
payloads. `seed_bulk()` adds many sessions and a valid audit chain spread over days.
"""
from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, insert, select
from werkzeug.security import generate_password_hash

from app import audit
from app.db import session_scope
from app.inventory import apply_policy
from app.models import AuditEntry, RecordedSession, SessionEvent, User, utcnow
from app.policy import load_policy
from app.recording import recorder

PASSWORD = "correct horse battery staple"
XSS = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\"><svg/onload=window.__xss=3>"
RUN_ID = "run-7f3a"

POLICY = """
version: 1
service_accounts:
  - name: billing-agent
    description: LLM agent that reconciles invoices
    groups: [agents]
  - name: ci-deployer
    description: CI deploy job
    groups: [ci]
users:
  - {email: alice@example.com, name: Alice Chen, groups: [dba], roles: [approver]}
  - {email: bob@example.com, name: Bob Ortiz, groups: [ops], roles: [approver]}
  - {email: carol@example.com, name: Carol Auditor, roles: [auditor]}
  - {email: dave@example.com, name: Dave Dev, groups: [dba], roles: [approver]}
connections:
  - name: billing-db
    type: postgres
    address: 127.0.0.1:5432
    database: billing
    username: billing_rw
    password: "${env:BILLING_DB_PASSWORD}"
    owner: "group:dba"
  - name: payments-api
    type: http
    hosts: [api.payments.test]
    inject: {headers: {Authorization: "Bearer ${env:PAYMENTS_TOKEN}"}}
    owner: alice@example.com
  - name: web-1
    type: ssh
    address: 127.0.0.1:22
    username: deploy
    password: "${env:WEB1_PASSWORD}"
    host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    owner: "group:ops"
grants:
  - {service_account: billing-agent, connection: billing-db}
  - {service_account: billing-agent, connection: payments-api}
  - {service_account: ci-deployer, connection: web-1}
rules:
  - name: no-ddl
    match: {protocol: [postgres, mysql], kind: [ddl]}
    action: deny
    message: DDL is not allowed through the gateway
  - name: writes-need-dba
    match: {connection: billing-db, kind: [write]}
    action: review
    approvers: {groups: [dba], count: 1}
    hold: 60s
  - name: refunds-need-finance
    match: {protocol: http, method: [POST], path: "/v1/refunds*"}
    action: review
    approvers: {groups: [dba], count: 1}
  - name: mask-pii
    match: {connection: billing-db}
    action: mask
    fields: [email]
    strategy: partial
"""
SECRETS = {"BILLING_DB_PASSWORD": "s3cret-db", "PAYMENTS_TOKEN": "pay-tok-123", "WEB1_PASSWORD": "ssh-pw"}


@dataclass
class Scenario:
    ssh_session: str
    sql_session: str
    http_session: str


def seed_policy(admin: str = "admin@example.com") -> None:
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY), actor="test-setup", environ=SECRETS)
    with session_scope() as s:
        for u in s.scalars(select(User)):
            u.password_hash = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
        s.add(User(email=admin, name="Ada Admin", roles=["admin"], source="portal",
                   password_hash=generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")))


def _record(protocol: str, connection: str, sa: str, events: list[tuple[str, dict]], meta: dict | None = None,
            run_id: str | None = RUN_ID) -> str:
    rec = recorder().open(protocol=protocol, connection=connection, service_account=sa,
                          client_addr="127.0.0.1:50122", run_id=run_id, meta=meta or {})
    for kind, data in events:
        rec.event(kind, data)
    rec.close()
    return rec.id


def seed_sessions() -> Scenario:
    prompt = "\x1b[1;32mdeploy@web-1\x1b[0m:\x1b[1;34m~\x1b[0m$ "
    ssh = _record("ssh", "web-1", "ci-deployer", [
        ("output", {"text": "Welcome to web-1 (Debian GNU/Linux 12)\r\n\r\n" + prompt}),
        ("input", {"text": "systemctl status api\r"}),
        ("decision", {"action": "allow", "status": None, "rule": None, "kind": "exec",
                      "operation": "systemctl status api"}),
        ("output", {"text": "systemctl status api\r\n\x1b[1;32m●\x1b[0m api.service - Billing API\r\n"
                            "     Active: \x1b[1;32mactive (running)\x1b[0m since Tue 09:12:01 UTC\r\n" + prompt}),
        ("resize", {"width": 100, "height": 28}),
        ("input", {"text": "rm -rf /var/lib/api\r"}),
        ("decision", {"action": "deny", "status": "denied", "rule": "no-rm-rf", "kind": "exec",
                      "operation": "rm -rf /var/lib/api", "message": "destructive command"}),
        ("output", {"text": "rm -rf /var/lib/api\r\nairlock: denied by rule no-rm-rf\r\n" + prompt}),
        ("output", {"text": "echo deploy-finished-ok\r\ndeploy-finished-ok\r\n" + prompt}),
    ], meta={"width": 100, "height": 28})
    select = f"SELECT id, email, note FROM invoices WHERE note = '{XSS}'"
    sql = _record("postgres", "billing-db", "billing-agent", [
        # The shapes the PostgreSQL relay records: the gate's decision, then one output
        # per statement with the SQL, its tag and a (masked) sample of the rows.
        ("decision", {"action": "allow", "status": None, "rule": "mask-pii", "kind": "read",
                      "operation": select, "masks": ["mask-pii"]}),
        ("output", {"sql": select, "masks": ["mask-pii"], "ms": 1.8, "masked": 2, "tag": "SELECT 2", "rows": 2,
                    "columns": ["id", "email", "note"], "sample": [[7, "a***@example.com", XSS], [8, "b***@example.com", "ok"]]}),
        ("decision", {"action": "deny", "status": "denied", "rule": "no-ddl", "kind": "ddl",
                      "operation": "DROP TABLE invoices", "message": "DDL is not allowed through the gateway"}),
    ])
    http = _record("http", "payments-api", "billing-agent", [
        # The shapes the HTTP proxy records: request and response tied by `flow`.
        ("decision", {"action": "allow", "status": None, "rule": None, "kind": "read",
                      "operation": f"GET https://api.payments.test/v1/charges?q={XSS}"}),
        ("input", {"flow": "f1", "method": "GET", "url": f"https://api.payments.test/v1/charges?q={XSS}",
                   "headers": {"accept": "application/json", "x-note": XSS, "authorization": "[redacted]"}}),
        ("output", {"flow": "f1", "status": 200, "headers": {"content-type": "application/json"},
                    "body": {"json": {"data": [{"id": "ch_1", "description": XSS}]}, "bytes": 118}}),
        ("input", {"flow": "f2", "method": "POST", "url": "https://api.payments.test/v1/refunds",
                   "headers": {"content-type": "application/json"},
                   "body": {"json": {"charge": "ch_1", "amount": 1200}, "bytes": 33}}),
        ("decision", {"action": "deny", "status": "rejected", "rule": "refunds-need-finance", "kind": "write",
                      "operation": "POST https://api.payments.test/v1/refunds", "review_id": 1,
                      "message": "review 1 was rejected"}),
        ("output", {"flow": "f2", "status": 403, "headers": {"content-type": "application/json"},
                    "body": {"text": XSS, "bytes": 80, "truncated": False}}),
    ])
    recorder().flush()
    return Scenario(ssh_session=ssh, sql_session=sql, http_session=http)


def seed_scenario() -> Scenario:
    seed_policy()
    return seed_sessions()


# -- bulk data (benchmark, dashboard history) ------------------------------------------

ACTIONS = [("decision.deny", 25), ("review.create", 10), ("review.approved", 8), ("review.rejected", 2),
           ("session.open", 25), ("session.close", 25), ("user.login", 3), ("token.issue", 1), ("grant.add", 1)]
ACCOUNTS = ["billing-agent", "ci-deployer", "etl-nightly", "support-bot", "report-gen", "infra-agent"]
CONNECTIONS = {"postgres": ["billing-db", "orders-db"], "mysql": ["legacy-crm"], "http": ["payments-api", "github"],
               "ssh": ["web-1", "web-2"]}


def seed_audit(n: int, days: int = 14, seed: int = 7) -> None:
    """Append `n` entries spread over `days`, as a valid chain continuing the current head."""
    rnd = random.Random(seed)
    names, weights = zip(*ACTIONS)
    now = utcnow()
    with session_scope() as s:
        head = s.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
        seq, prev = (head.seq, head.hash) if head else (0, audit.GENESIS)
        start = now - timedelta(days=days)
        step = (now - start) / max(n, 1)
        batch = []
        for i in range(n):
            seq += 1
            ts = start + step * i
            action = rnd.choices(names, weights)[0]
            actor = rnd.choice(ACCOUNTS)
            data = {"rule": "no-ddl", "protocol": "postgres", "operation": f"DELETE FROM t{i % 50}"} \
                if action == "decision.deny" else {"n": i}
            data = json.loads(json.dumps(audit.scrub(data)))
            h = audit._entry_hash(prev, seq, ts, actor, action, "billing-db", data)
            batch.append({"seq": seq, "ts": ts, "actor": actor, "action": action, "target": "billing-db",
                          "data": data, "prev_hash": prev, "hash": h})
            prev = h
            if len(batch) >= 5000:
                s.execute(insert(AuditEntry), batch)
                batch = []
        if batch:
            s.execute(insert(AuditEntry), batch)


def seed_bulk_sessions(n: int, days: int = 45, events_per: int = 4, seed: int = 11) -> None:
    rnd = random.Random(seed)
    now = utcnow()
    with session_scope() as s:
        sessions, evs = [], []
        for i in range(n):
            protocol = rnd.choice(list(CONNECTIONS))
            started = now - timedelta(seconds=rnd.uniform(0, days * 86400))
            sid = str(uuid.UUID(int=rnd.getrandbits(128)))
            ended = started + timedelta(seconds=rnd.uniform(0.2, 900)) if rnd.random() > 0.002 else None
            sessions.append({"id": sid, "protocol": protocol, "connection": rnd.choice(CONNECTIONS[protocol]),
                             "service_account": rnd.choice(ACCOUNTS), "run_id": f"run-{i // 7}",
                             "client_addr": "10.0.0.7:41000", "started_at": started, "ended_at": ended,
                             "event_count": events_per, "meta": {}})
            deny = rnd.random() < 0.1
            for k in range(events_per):
                kind = "decision" if k == 1 else ("input" if k % 2 == 0 else "output")
                data = {"action": "deny" if deny else "allow", "rule": "no-ddl" if deny else None, "kind": "read",
                        "operation": "SELECT 1"} if kind == "decision" else {"statement": "SELECT 1"}
                evs.append({"session_id": sid, "seq": k + 1, "t": k * 0.01, "kind": kind, "data": json.dumps(data)})
            if len(sessions) >= 2000:
                s.execute(insert(RecordedSession), sessions)
                s.execute(insert(SessionEvent), evs)
                sessions, evs = [], []
        if sessions:
            s.execute(insert(RecordedSession), sessions)
            s.execute(insert(SessionEvent), evs)


def counts() -> tuple[int, int]:
    with session_scope() as s:
        return (s.scalar(select(func.count(RecordedSession.id))), s.scalar(select(func.count(AuditEntry.id))))
