"""Apply a validated policy document to the store, and read it back out.

`apply_policy` makes the store match the file in one transaction: applying the same
file twice changes nothing, and a file that fails (validation, an unresolvable secret
reference) changes nothing either. Things created in the portal (grants, users who
logged in through OIDC) are left alone; things the file used to declare are removed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit, vault
from app.models import Campaign, Connection, Grant, Group, Rule, ServiceAccount, User, utcnow
from app.policy import (
    CampaignSpec,
    ConnectionSpec,
    GrantSpec,
    PolicyDocument,
    Rule as RuleSpec,
    ServiceAccountSpec,
    UserSpec,
)
from app.inventory_secrets import UnresolvedSecret, connection_secrets, secret_refs  # noqa: F401 - UnresolvedSecret is raised from here
from app.versions import bump_version


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Secrets whose reference could not be resolved here but is unchanged: the stored
    # value stays. Not a change.
    kept: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)

    def summary(self) -> str:
        parts = []
        for label, items in (("created", self.created), ("updated", self.updated), ("removed", self.removed)):
            if items:
                parts.append(f"{label} {len(items)}: {', '.join(items)}")
        text = "; ".join(parts) or "no changes"
        for item in self.kept:
            text += f"\nkept the stored secret of {item}"
        return text


def apply_policy(s: Session, doc: PolicyDocument, *, actor: str, environ: Mapping[str, str] | None = None) -> ApplyReport:
    # Resolve every secret first: a missing env var must fail before anything is written.
    report = ApplyReport()
    stored = {c.name: c for c in s.scalars(select(Connection))}
    secrets = {c.name: connection_secrets(i, c, environ, stored.get(c.name), report.kept)
               for i, c in enumerate(doc.connections)}
    groups = _Groups(s)
    _apply_accounts(s, doc.service_accounts, groups, report)
    _apply_users(s, doc.users, groups, report)
    _apply_connections(s, doc, secrets, report)
    s.flush()
    _apply_grants(s, doc.grants, report, actor)
    _apply_rules(s, doc.rules, report)
    _apply_campaigns(s, doc.campaigns, report)
    if report.changed:
        bump_version(s)
        audit.append(s, actor=actor, action="policy.apply", data={
            "created": report.created, "updated": report.updated, "removed": report.removed,
        })
    return report


class _Groups:
    def __init__(self, s: Session):
        self.s = s
        self.by_name = {g.name: g for g in s.scalars(select(Group))}

    def sync(self, row: ServiceAccount | User, names) -> bool:
        """Give `row` exactly these groups; whether anything changed."""
        if row.group_names == set(names):
            return False
        row.groups = self.get(names)
        return True

    def get(self, names) -> list[Group]:
        out = []
        for name in sorted(set(names)):
            if name not in self.by_name:
                self.by_name[name] = Group(name=name)
                self.s.add(self.by_name[name])
            out.append(self.by_name[name])
        return out


def _set(row: Any, values: dict[str, Any]) -> bool:
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def _apply_accounts(s: Session, specs: tuple[ServiceAccountSpec, ...], groups: _Groups, report: ApplyReport) -> None:
    existing = {a.name: a for a in s.scalars(select(ServiceAccount))}
    for spec in specs:
        values = {
            "description": spec.description,
            "oidc_issuer": spec.oidc.issuer if spec.oidc else None,
            "oidc_subject": spec.oidc.subject if spec.oidc else None,
            "groups_claim": spec.oidc.groups_claim if spec.oidc else None,
            "public_keys": list(spec.public_keys),
            "disabled": False,
        }
        row = existing.pop(spec.name, None)
        if row is None:
            s.add(ServiceAccount(name=spec.name, groups=groups.get(spec.groups), **values))
            report.created.append(f"service_account:{spec.name}")
            continue
        changed = _set(row, values)
        if groups.sync(row, spec.groups):
            changed = True
        if changed:
            report.updated.append(f"service_account:{spec.name}")
    for row in existing.values():
        # Disabled, not deleted: its sessions and audit entries still name it.
        if not row.disabled:
            row.disabled = True
            report.removed.append(f"service_account:{row.name}")


def _apply_users(s: Session, specs: tuple[UserSpec, ...], groups: _Groups, report: ApplyReport) -> None:
    existing = {u.email.lower(): u for u in s.scalars(select(User))}
    for spec in specs:
        row = existing.pop(spec.email.lower(), None)
        values = {"roles": sorted(spec.roles), "active": True}
        if spec.name:
            values["name"] = spec.name
        if row is None:
            s.add(User(email=spec.email, groups=groups.get(spec.groups), source="policy", **values))
            report.created.append(f"user:{spec.email}")
            continue
        changed = _set(row, values)
        if groups.sync(row, spec.groups):
            changed = True
        if changed:
            report.updated.append(f"user:{spec.email}")
    for row in existing.values():
        if row.source == "policy" and row.active:
            row.active = False
            report.removed.append(f"user:{row.email}")


def connection_config(spec: ConnectionSpec, default: str = "allow") -> dict[str, Any]:
    """The non-secret part of a connection, as adapters read it from `Target.config`.

    `default` is the one in force (the connection's own, else the file's); kept only when
    it is not allow, so stores from before the setting read the same.
    """
    config = spec.to_dict()
    for key in ("name", "type", "owner", "password", "private_key", "inject", "default"):
        config.pop(key, None)
    if default != "allow":
        config["default"] = default
    config["inject_headers"] = sorted(name for name, _ in spec.inject_headers)
    config["inject_query"] = sorted(name for name, _ in spec.inject_query)
    return config


def _apply_connections(s: Session, doc: PolicyDocument, secrets: dict[str, dict[str, str]],
                       report: ApplyReport) -> None:
    existing = {c.name: c for c in s.scalars(select(Connection))}
    for spec in doc.connections:
        config = connection_config(spec, doc.default_for(spec))
        refs = secret_refs(spec)
        row = existing.pop(spec.name, None)
        if row is None:
            s.add(Connection(name=spec.name, type=spec.type, config={**config, "secret_refs": refs},
                             owner=spec.owner, secrets=vault.encrypt(secrets[spec.name])))
            report.created.append(f"connection:{spec.name}")
            continue
        old = dict(row.config or {})
        old_refs = old.pop("secret_refs", None)
        changed = _set(row, {"type": spec.type, "owner": spec.owner})
        if old != config:
            changed = True
        if changed or old_refs != refs:
            # Which reference each secret came from is bookkeeping, not a change to report:
            # the portal re-applies with its own placeholders for the same values.
            row.config = {**config, "secret_refs": refs}
        if {k: v.reveal() for k, v in vault.decrypt(row.secrets).items()} != secrets[spec.name]:
            row.secrets = vault.encrypt(secrets[spec.name])
            changed = True
        if changed:
            report.updated.append(f"connection:{spec.name}")
    for row in existing.values():
        s.delete(row)
        report.removed.append(f"connection:{row.name}")


def _apply_grants(s: Session, specs: tuple[GrantSpec, ...], report: ApplyReport, actor: str) -> None:
    accounts = {a.name: a for a in s.scalars(select(ServiceAccount))}
    connections = {c.name: c for c in s.scalars(select(Connection))}
    existing = {(g.service_account.name, g.connection.name): g for g in s.scalars(select(Grant))}
    for spec in specs:
        key = (spec.service_account, spec.connection)
        label = f"grant:{spec.service_account}->{spec.connection}"
        row = existing.pop(key, None)
        if row is None:
            s.add(Grant(service_account=accounts[spec.service_account], connection=connections[spec.connection],
                        expires_at=spec.expires, source="policy", created_by=actor))
            report.created.append(label)
        elif _set(row, {"expires_at": spec.expires, "revoked_at": None, "revoked_by": None, "source": "policy"}):
            report.updated.append(label)
    now = utcnow()
    for (sa, conn), row in existing.items():
        if row.source == "policy" and row.revoked_at is None:
            row.revoked_at, row.revoked_by = now, actor
            report.removed.append(f"grant:{sa}->{conn}")


def _apply_rules(s: Session, specs: tuple[RuleSpec, ...], report: ApplyReport) -> None:
    existing = {r.name: r for r in s.scalars(select(Rule))}
    for position, spec in enumerate(specs):
        body = spec.to_dict()
        row = existing.pop(spec.name, None)
        if row is None:
            s.add(Rule(name=spec.name, position=position, body=body))
            report.created.append(f"rule:{spec.name}")
        elif _set(row, {"position": position, "body": body}):
            report.updated.append(f"rule:{spec.name}")
    for row in existing.values():
        s.delete(row)
        report.removed.append(f"rule:{row.name}")


def _apply_campaigns(s: Session, specs: tuple[CampaignSpec, ...], report: ApplyReport) -> None:
    existing = {c.name: c for c in s.scalars(select(Campaign))}
    for spec in specs:
        d = spec.to_dict()
        values = {
            "scope": d.get("scope", {}),
            "reviewers": spec.reviewers,
            "schedule": spec.schedule,
            "duration_seconds": spec.duration,
            "remind_every_seconds": spec.remind_every,
            "on_deadline": spec.on_deadline,
            "escalate_to": spec.escalate_to,
            "unused_after_seconds": spec.unused_after,
            "enabled": spec.enabled,
        }
        row = existing.pop(spec.name, None)
        if row is None:
            s.add(Campaign(name=spec.name, **values))
            report.created.append(f"campaign:{spec.name}")
        elif _set(row, values):
            report.updated.append(f"campaign:{spec.name}")
    for row in existing.values():
        s.delete(row)
        report.removed.append(f"campaign:{row.name}")


# -- export: the store as a policy document ---------------------------------------------
#
# Secrets are write-only: the export names each stored secret with an `${env:...}`
# placeholder, so the file round-trips through `airlock apply` once those variables are
# set (the portal supplies them itself from the vault when it applies an edit).

def _env_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper() or "X"


def secret_placeholders(s: Session) -> dict[str, dict[str, str]]:
    """connection -> stored secret key ("password", "header:NAME", ...) -> env variable name."""
    out: dict[str, dict[str, str]] = {}
    used: set[str] = set()
    for conn in s.scalars(select(Connection).order_by(Connection.name)):
        names: dict[str, str] = {}
        for key in sorted(vault.decrypt(conn.secrets)):
            kind, _, field_name = key.partition(":")
            suffix = f"{kind}_{field_name}" if field_name else kind
            base = name = f"AIRLOCK_{_env_part(conn.name)}_{_env_part(suffix)}"
            n = 2
            while name in used:  # "a-b" and "a_b" would otherwise share a variable
                name, n = f"{base}_{n}", n + 1
            used.add(name)
            names[key] = name
        out[conn.name] = names
    return out


def placeholder_environ(s: Session) -> dict[str, str]:
    """The placeholders of `export_policy` mapped to the stored secrets (for re-applying)."""
    env: dict[str, str] = {}
    places = secret_placeholders(s)
    for conn in s.scalars(select(Connection)):
        for key, secret in vault.decrypt(conn.secrets).items():
            env[places[conn.name][key]] = secret.reveal()
    return env


def _export_connection(conn: Connection, places: dict[str, str]) -> ConnectionSpec:
    cfg = conn.config or {}

    def ref(key: str) -> str:
        return "${env:" + places[key] + "}" if key in places else ""

    return ConnectionSpec(
        name=conn.name,
        type=conn.type,
        owner=conn.owner or "",
        description=str(cfg.get("description") or ""),
        slack_channel=str(cfg.get("slack_channel") or ""),
        hosts=tuple(cfg.get("hosts") or ()),
        inject_headers=tuple((h, ref(f"header:{h}")) for h in cfg.get("inject_headers") or () if f"header:{h}" in places),
        inject_query=tuple((q, ref(f"query:{q}")) for q in cfg.get("inject_query") or () if f"query:{q}" in places),
        ca_bundle=str(cfg.get("ca_bundle") or ""),
        address=str(cfg.get("address") or ""),
        database=str(cfg.get("database") or ""),
        username=str(cfg.get("username") or ""),
        password=ref("password"),
        private_key=ref("private_key"),
        host_key=str(cfg.get("host_key") or ""),
        default=str(cfg.get("default") or ""),
    )


def export_policy(s: Session) -> PolicyDocument:
    """The store as a validated policy document that `apply_policy` maps back to no change.

    Portal-made grants and users who came through OIDC or the portal are not part of the
    file (apply leaves them alone either way); disabled service accounts are gone from it.
    """
    from app.policy import CampaignSpec as _Campaign, OidcSpec, document_from_dict

    places = secret_placeholders(s)
    accounts = [a for a in s.scalars(select(ServiceAccount).order_by(ServiceAccount.name)) if not a.disabled]
    names = {a.name for a in accounts}
    doc = PolicyDocument(
        version=1,
        service_accounts=tuple(
            ServiceAccountSpec(
                name=a.name, groups=tuple(sorted(a.group_names)), description=a.description or "",
                oidc=OidcSpec(a.oidc_issuer, a.oidc_subject, a.groups_claim) if a.oidc_issuer and a.oidc_subject else None,
                public_keys=tuple(a.public_keys or ()),
            ) for a in accounts
        ),
        users=tuple(
            UserSpec(email=u.email, name=u.name or "", groups=tuple(sorted(u.group_names)), roles=tuple(sorted(u.roles or ())))
            for u in s.scalars(select(User).order_by(User.email)) if u.source == "policy" and u.active
        ),
        connections=tuple(_export_connection(c, places.get(c.name, {}))
                          for c in s.scalars(select(Connection).order_by(Connection.name))),
        grants=tuple(
            GrantSpec(service_account=g.service_account.name, connection=g.connection.name, expires=g.expires_at)
            for g in s.scalars(select(Grant).order_by(Grant.id))
            if g.source == "policy" and g.revoked_at is None and g.service_account.name in names
        ),
        rules=tuple(RuleSpec.from_dict(r.body) for r in s.scalars(select(Rule).order_by(Rule.position, Rule.id))),
        campaigns=tuple(
            _Campaign(
                name=c.name, schedule=c.schedule, reviewers=c.reviewers, duration=c.duration_seconds,
                remind_every=c.remind_every_seconds, on_deadline=c.on_deadline, enabled=c.enabled,
                escalate_to=c.escalate_to, unused_after=c.unused_after_seconds,
                connections=tuple((c.scope or {}).get("connections") or ()),
                service_accounts=tuple((c.scope or {}).get("service_accounts") or ()),
            ) for c in s.scalars(select(Campaign).order_by(Campaign.name))
        ),
    )
    # Through the same validation as a file: what we hand out must load back.
    return document_from_dict(doc.to_dict(), source="store")
