"""A read-only picture of policy, grants and targets at one store version.

The gate compiles it once per version and keeps it until the version moves, so the
hot path does no store reads.
"""
from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from app import vault
from app.db import session_scope
from app.models import Connection, Grant, Rule, ServiceAccount, StoreVersion
from app.policy import (CompiledPolicy, ConnectionDefault, GrantSpec, Rule as RuleSpec, ServiceAccountSpec,
                        compile_policy)


@dataclass(frozen=True)
class Target:
    """A connection as an adapter needs it. `secrets` are decrypted `vault.Secret`s."""

    name: str
    type: str
    config: dict[str, Any]
    secrets: dict[str, Any] = field(repr=False, default_factory=dict)
    owner: str = ""


@dataclass(frozen=True)
class Snapshot:
    version: int
    policy: CompiledPolicy
    targets: dict[str, Target]
    grants: dict[str, dict[str, datetime | None]]  # service account -> connection -> expiry
    stale_at: float = float("inf")  # epoch of the next grant expiry: decisions change then
    # (service account, connection) -> when its grant was revoked, for pairs with no live
    # grant: a refusal can then say "revoked", not just "no grant" (the runtime had one).
    revoked: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def http_route(self, host: str) -> Target | None:
        host = host.lower().rstrip(".")
        globbed = None
        for target in self.targets.values():
            if target.type != "http":
                continue
            for pattern in target.config.get("hosts", ()):
                pattern = pattern.lower()
                if pattern == host:
                    return target
                if globbed is None and any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(host, pattern):
                    globbed = target
        return globbed

    def granted(self, service_account: str, now: datetime) -> set[str]:
        return {c for c, exp in self.grants.get(service_account, {}).items() if exp is None or exp > now}


def read_version(name: str = "policy") -> int:
    with session_scope() as s:
        row = s.get(StoreVersion, name)
        return row.version if row else 0


def load_snapshot() -> Snapshot:
    with session_scope() as s:
        version_row = s.get(StoreVersion, "policy")
        version = version_row.version if version_row else 0
        rules = [RuleSpec.from_dict(r.body) for r in s.scalars(select(Rule).order_by(Rule.position, Rule.id))]
        accounts = list(s.scalars(select(ServiceAccount)))
        rows = [g for g in s.scalars(select(Grant)) if not g.service_account.disabled]
        grants = [g for g in rows if g.revoked_at is None]
        revoked = {(g.service_account.name, g.connection.name): g.revoked_at for g in rows if g.revoked_at is not None}
        grant_specs = [
            GrantSpec(service_account=g.service_account.name, connection=g.connection.name, expires=g.expires_at)
            for g in grants
        ]
        account_specs = [
            ServiceAccountSpec(name=a.name, groups=tuple(sorted(a.group_names)))
            for a in accounts
            if not a.disabled
        ]
        targets = {
            c.name: Target(c.name, c.type, dict(c.config or {}), vault.decrypt(c.secrets), c.owner)
            for c in s.scalars(select(Connection))
        }
        defaults = {name: ConnectionDefault.of(t.config.get("default"), t.owner) for name, t in targets.items()}
        by_account: dict[str, dict[str, datetime | None]] = {}
        for g in grant_specs:
            by_account.setdefault(g.service_account, {})[g.connection] = g.expires
    case_sensitive = frozenset(name for name, t in targets.items() if t.config.get("path_case_sensitive"))
    policy = compile_policy(rules, grant_specs, account_specs, version=version, case_sensitive_paths=case_sensitive,
                            defaults=defaults)
    loaded = time.time()
    upcoming = [g.expires.timestamp() for g in grant_specs if g.expires is not None and g.expires.timestamp() > loaded]
    return Snapshot(version, policy, targets, by_account, min(upcoming, default=float("inf")), revoked)
