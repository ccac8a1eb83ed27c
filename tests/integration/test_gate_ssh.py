"""The gate's SSH entry points on a real store: a command line decided part by part,
operations that only an explicit rule may allow, and login by registered public key."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.gate import Gate
from app.identity import AuthError, issue_token
from app.inventory import apply_policy
from app.models import AuditEntry
from app.policy import load_policy
from app.relay.ssh.commands import analyse
from app.relay.ssh.session import operations
from app.types import Operation

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
POLICY = f"""
version: 1
service_accounts:
  - {{name: bot, public_keys: ["{KEY} bot@laptop"]}}
  - {{name: idle}}
connections:
  - {{name: box, type: ssh, address: "127.0.0.1:22", username: u, password: "pw", host_key: "{KEY}"}}
grants:
  - {{service_account: bot, connection: box}}
rules:
  - name: no-rm-rf
    match: {{protocol: ssh, command: ["regex:^rm -[a-zA-Z]*r"]}}
    action: deny
    message: no recursive deletes
  - name: restarts
    match: {{protocol: ssh, command: ["systemctl restart *"]}}
    action: review
    approvers: {{groups: [ops]}}
    hold: 1s
  - name: db-tunnel
    match: {{protocol: ssh, attributes: [port_forwarding], targets: ["db:5432"]}}
    action: allow
"""


@pytest.fixture
def bot(store):
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY), actor="test", environ={})
        issue_token(s, "bot", timedelta(hours=1))


def line(text: str):
    return operations("box", analyse(text))


def test_a_denied_part_denies_the_line_and_a_review_holds_the_whole_line(bot):
    async def main():
        gate = Gate()
        who = await gate.authenticate_key(KEY + " any-comment")
        assert who.service_account == "bot"
        ok = await gate.decide_parts(who, *line("ls /tmp && echo done"))
        assert ok.action == "allow"
        denied = await gate.decide_parts(who, *line("systemctl restart api; rm -r -f /srv"))
        assert (denied.action, denied.rule, denied.status) == ("deny", "no-rm-rf", "denied")
        held = await gate.decide_parts(who, *line("echo hi && systemctl restart api"), hold=0.2)
        assert (held.action, held.status, held.rule) == ("review", "pending", "restarts")
        return held.review_id

    review_id = asyncio.run(main())
    with session_scope() as s:
        from app.models import Review

        review = s.get(Review, review_id)
        # the approver sees, and approve-once binds, the whole line, not only its held part
        assert (review.operation, review.kind, review.rule) == ("echo hi && systemctl restart api", "admin", "restarts")
        denials = [e.data for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "decision.deny"))]
        assert any(d["operation"] == "systemctl restart api; rm -r -f /srv" for d in denials)


def test_needs_rule_refuses_what_only_the_default_allows(bot):
    async def main():
        gate = Gate()
        who = await gate.authenticate_key(KEY)

        def fwd(target: str) -> Operation:
            return Operation("ssh", "box", "admin", text=f"forward to {target}", command=f"forward to {target}",
                             targets=(target,), attributes=frozenset({"port_forwarding"}))

        allowed = await gate.decide(who, fwd("db:5432"), needs_rule=True)
        refused = await gate.decide(who, fwd("mail:25"), needs_rule=True)
        plain = await gate.decide(who, fwd("mail:25"))
        return allowed, refused, plain

    allowed, refused, plain = asyncio.run(main())
    assert (allowed.action, allowed.rule) == ("allow", "db-tunnel")
    assert (refused.action, refused.rule) == ("deny", "no-allow-rule")
    assert plain.action == "allow"  # without needs_rule the connection's default applies


def test_unknown_public_key_is_refused(bot):
    async def main():
        gate = Gate()
        with pytest.raises(AuthError):
            await gate.authenticate_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        with pytest.raises(AuthError):
            await gate.authenticate_key("not a key")

    asyncio.run(main())
