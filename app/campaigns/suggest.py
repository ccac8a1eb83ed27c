"""What the reviewer is advised to do with a grant, and why, in words. Pure."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from app.campaigns.usage import READ_KINDS, Usage

# What read-only forbids, per protocol: every kind the gate knows that is not a read.
_NOT_READ = {"http": ["write"], "postgres": ["write", "ddl", "dcl", "admin", "exec"],
             "mysql": ["write", "ddl", "dcl", "admin", "exec"]}
_HTTP_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Suggestion:
    action: str  # revoke | narrow | keep
    reason: str
    policy_change: str = ""  # YAML for `narrow`: a rule to add to the policy file


def _days(seconds: float) -> int:
    return int(seconds // 86400)


def suggest(usage: Usage, *, service_account: str, connection: str, protocol: str, granted_at: datetime,
            now: datetime, unused_after: int, campaign: str = "") -> Suggestion:
    limit = _days(unused_after)
    if usage.last_used is None:
        age = _days((now - granted_at).total_seconds())
        if age >= limit:
            return Suggestion("revoke", f"never used in the {min(age, 90)} days since it was granted")
        return Suggestion("keep", f"granted {age} day{'s' * (age != 1)} ago and not used yet: too new to judge")
    idle = _days((now - usage.last_used).total_seconds())
    if idle >= limit:
        return Suggestion("revoke", f"unused for {idle} days (last used {usage.last_used:%Y-%m-%d})")
    kinds = set(usage.ops)
    reads_only = kinds <= READ_KINDS if protocol != "http" else kinds <= _HTTP_READ_METHODS
    if reads_only and protocol in _NOT_READ and usage.total_ops:
        n = usage.total_ops
        return Suggestion("narrow", f"only reads in the last 90 days ({n} operation"
                                    f"{'s' * (n != 1)}, no writes): narrow it to read-only",
                          read_only_rule(service_account, connection, protocol, campaign))
    seen = ", ".join(f"{n} {k}" for k, n in sorted(usage.ops.items(), key=lambda kv: -kv[1]))
    return Suggestion("keep", f"in use: last used {idle} day{'s' * (idle != 1)} ago ({seen})")


def read_only_rule(service_account: str, connection: str, protocol: str, campaign: str = "") -> str:
    """A policy rule that leaves this service account only reads on this connection.

    Written out directly (JSON strings are YAML strings): a campaign over thousands of
    grants makes hundreds of these, and a YAML emitter per item would dominate its start."""
    message = "narrowed to read-only by an access review" + (f" ({campaign})" if campaign else "")
    q = json.dumps
    return ("rules:\n"
            f"- name: {q(f'read-only-{service_account}-{connection}'[:200])}\n"
            f"  match:\n    protocol: {q(protocol)}\n    connection: {q(connection)}\n"
            f"    service_account: {q(service_account)}\n    kind: {q(_NOT_READ[protocol])}\n"
            f"  action: deny\n  message: {q(message)}\n")
