"""A policy for Slack tests: one channel per way of choosing it, a portal-only rule, people."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app.db import session_scope
from app.inventory import apply_policy
from app.models import User
from app.policy import load_policy
from tests.integration.portal.held import decide, sql_op

SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
DEFAULT_CHANNEL = "#airlock-reviews"
PASSWORD = "correct horse battery staple"
TEAM = "T1"

POLICY = """
version: 1
service_accounts:
  - {name: billing-agent, groups: [agents]}
users:
  - {email: alice@example.com, name: Alice Chen, groups: [dba], roles: [approver]}
  - {email: bob@example.com, name: Bob Ortiz, groups: [ops], roles: [approver]}
  - {email: dave@example.com, name: Dave Dev, groups: [dba], roles: [approver]}
  - {email: erin@example.com, name: Erin Ellis, groups: [dba], roles: [approver]}
connections:
  - name: billing-db
    type: postgres
    address: 127.0.0.1:5432
    username: billing_rw
    password: "${env:BILLING_DB_PASSWORD}"
    owner: "group:dba"
    slack_channel: "#billing-approvals"
  - name: payments-api
    type: http
    hosts: [api.payments.test]
    owner: alice@example.com
grants:
  - {service_account: billing-agent, connection: billing-db}
  - {service_account: billing-agent, connection: payments-api}
rules:
  - name: ddl-in-portal-only
    match: {connection: billing-db, kind: [ddl]}
    action: review
    approvers: {groups: [dba]}
    slack: false
  - name: deletes-need-two
    match: {connection: billing-db, kind: [write], tables: [ledger]}
    action: review
    approvers: {groups: [dba], count: 2}
  - name: writes-need-dba
    match: {connection: billing-db, kind: [write]}
    action: review
    approvers: {groups: [dba]}
  - name: refunds-need-dba
    match: {protocol: http, method: [POST], path: "/v1/refunds*"}
    action: review
    approvers: {groups: [dba]}
    channel: "#refunds"
  - name: payment-deletes
    match: {protocol: http, method: [DELETE]}
    action: review
    approvers: {groups: [dba]}
"""
# Slack user ids of people linked up front; others link during the tests.
LINKED = {"alice@example.com": "U_ALICE", "bob@example.com": "U_BOB", "dave@example.com": "U_DAVE"}


def seed(policy: str = POLICY) -> None:
    with session_scope() as s:
        apply_policy(s, load_policy(policy), actor="test-setup", environ={"BILLING_DB_PASSWORD": "pw"})
    with session_scope() as s:
        for u in s.scalars(select(User)):
            u.password_hash = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
            u.slack_user_id = LINKED.get(u.email)


def open_review(op=None, *, subject: str = "", run_id: str | None = "run-42") -> int:
    """A real held operation's review, opened through the gate (hold 0: don't wait)."""
    verdict = decide(op or sql_op("UPDATE invoices SET paid = true WHERE id = 7"), subject=subject, run_id=run_id)
    assert verdict.action == "review" and verdict.review_id, verdict
    return verdict.review_id


def signed(body: bytes, *, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    base = f"v0:{ts}:".encode() + body
    sig = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}


def post_payload(client, payload: dict[str, Any], *, ts: int | None = None, secret: str = SECRET,
                 headers: dict[str, str] | None = None):
    body = urlencode({"payload": json.dumps(payload)}).encode()
    hdrs = signed(body, ts=ts, secret=secret) if headers is None else headers
    return client.post("/slack/actions", data=body, headers=hdrs, content_type="application/x-www-form-urlencoded")


def post_command(client, text: str, *, user: str, response_url: str = "", secret: str = SECRET):
    body = urlencode({"command": "/airlock", "text": text, "user_id": user, "user_name": user.lower(),
                      "team_id": TEAM, "channel_id": "C_CMD", "response_url": response_url,
                      "trigger_id": "trig-cmd"}).encode()
    return client.post("/slack/commands", data=body, headers=signed(body, secret=secret),
                       content_type="application/x-www-form-urlencoded")


def click(message: dict[str, Any], action_id: str, *, user: str, channel: str, ts: str,
          response_url: str | None = None, trigger_id: str = "trig-1") -> dict[str, Any]:
    """The block_actions payload Slack sends when `user` presses a button of the posted message."""
    for block in message["blocks"]:
        for element in block.get("elements") or ():
            if element.get("action_id") == action_id:
                return {
                    "type": "block_actions", "api_app_id": "A1", "trigger_id": trigger_id,
                    "user": {"id": user, "username": user.lower(), "team_id": TEAM}, "team": {"id": TEAM},
                    "container": {"type": "message", "channel_id": channel, "message_ts": ts},
                    "channel": {"id": channel}, "response_url": response_url,
                    "message": {"ts": ts, "blocks": message["blocks"]},
                    "actions": [{"type": "button", "action_id": action_id, "block_id": block.get("block_id"),
                                 "value": element["value"], "action_ts": str(time.time())}],
                }
    raise AssertionError(f"no {action_id} button in the message")


def view_submission(view: dict[str, Any], values: dict[str, str], *, user: str) -> dict[str, Any]:
    """What Slack sends when `user` submits the modal we opened, with these input values."""
    return {
        "type": "view_submission", "api_app_id": "A1",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM}, "team": {"id": TEAM},
        "view": {"id": "V1", "callback_id": view["callback_id"], "private_metadata": view["private_metadata"],
                 "state": {"values": {k: {k: {"type": "plain_text_input", "value": v}} for k, v in values.items()}}},
    }
