"""Apply a validated policy document to the store, and read it back out.

`apply_policy` makes the store match the file in one transaction: applying the same
file twice changes nothing, and a file that fails (validation, an unresolvable secret
reference) changes nothing either. Things created in the portal (grants, users who
logged in through OIDC) are left alone; things the file used to declare are removed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

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

K = TypeVar("K")
R = TypeVar("R")
S = TypeVar("S")


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


def _reconcile(report: ApplyReport, kind: str, existing: dict[K, R], specs: Iterable[S], *,
               key: Callable[[S], K], name: Callable[[S], str], row_name: Callable[[R], str],
               create: Callable[[S], object], update: Callable[[R, S], bool], retire: Callable[[R], bool]) -> None:
    """The one upsert-report-retire loop. Each spec creates its row or updates the stored
    one (`update` says whether anything changed); each stored row no spec names any more
    is retired (deleted, disabled or revoked; `retire` says whether that changed it)."""
    for spec in specs:
        row = existing.pop(key(spec), None)
        if row is None:
            create(spec)
            report.created.append(f"{kind}:{name(spec)}")
        elif update(row, spec):
            report.updated.append(f"{kind}:{name(spec)}")
    for row in existing.values():
        if retire(row):
            report.removed.append(f"{kind}:{row_name(row)}")


def _delete(s: Session) -> Callable[[Any], bool]:
    def retire(row: Any) -> bool:
        s.delete(row)
        return True
    return retire


def _apply_accounts(s: Session, specs: tuple[ServiceAccountSpec, ...], groups: _Groups, report: ApplyReport) -> None:
    def values(spec: ServiceAccountSpec) -> dict[str, Any]:
        return {
            "description": spec.description,
            "oidc_issuer": spec.oidc.issuer if spec.oidc else None,
            "oidc_subject": spec.oidc.subject if spec.oidc else None,
            "groups_claim": spec.oidc.groups_claim if spec.oidc else None,
            "public_keys": list(spec.public_keys),
            "disabled": False,
        }

    def update(row: ServiceAccount, spec: ServiceAccountSpec) -> bool:
        changed = _set(row, values(spec))
        return groups.sync(row, spec.groups) or changed

    def retire(row: ServiceAccount) -> bool:
        # Disabled, not deleted: its sessions and audit entries still name it.
        if row.disabled:
            return False
        row.disabled = True
        return True

    _reconcile(report, "service_account", {a.name: a for a in s.scalars(select(ServiceAccount))}, specs,
               key=lambda spec: spec.name, name=lambda spec: spec.name, row_name=lambda row: row.name,
               create=lambda spec: s.add(ServiceAccount(name=spec.name, groups=groups.get(spec.groups), **values(spec))),
               update=update, retire=retire)


def _apply_users(s: Session, specs: tuple[UserSpec, ...], groups: _Groups, report: ApplyReport) -> None:
    def values(spec: UserSpec) -> dict[str, Any]:
        return {"roles": sorted(spec.roles), "active": True, **({"name": spec.name} if spec.name else {})}

    def update(row: User, spec: UserSpec) -> bool:
        changed = _set(row, values(spec))
        return groups.sync(row, spec.groups) or changed

    def retire(row: User) -> bool:
        if row.source != "policy" or not row.active:  # people who logged in through OIDC stay
            return False
        row.active = False
        return True

    _reconcile(report, "user", {u.email.lower(): u for u in s.scalars(select(User))}, specs,
               key=lambda spec: spec.email.lower(), name=lambda spec: spec.email, row_name=lambda row: row.email,
               create=lambda spec: s.add(User(email=spec.email, groups=groups.get(spec.groups), source="policy",
                                              **values(spec))),
               update=update, retire=retire)


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
    def create(spec: ConnectionSpec) -> None:
        config = connection_config(spec, doc.default_for(spec))
        s.add(Connection(name=spec.name, type=spec.type, config={**config, "secret_refs": secret_refs(spec)},
                         owner=spec.owner, secrets=vault.encrypt(secrets[spec.name])))

    def update(row: Connection, spec: ConnectionSpec) -> bool:
        config = connection_config(spec, doc.default_for(spec))
        refs = secret_refs(spec)
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
        return changed

    _reconcile(report, "connection", {c.name: c for c in s.scalars(select(Connection))}, doc.connections,
               key=lambda spec: spec.name, name=lambda spec: spec.name, row_name=lambda row: row.name,
               create=create, update=update, retire=_delete(s))


def _apply_grants(s: Session, specs: tuple[GrantSpec, ...], report: ApplyReport, actor: str) -> None:
    accounts = {a.name: a for a in s.scalars(select(ServiceAccount))}
    connections = {c.name: c for c in s.scalars(select(Connection))}
    now = utcnow()

    def retire(row: Grant) -> bool:
        if row.source != "policy" or row.revoked_at is not None:  # granted in the portal: left alone
            return False
        row.revoked_at, row.revoked_by = now, actor
        return True

    _reconcile(report, "grant", {(g.service_account.name, g.connection.name): g for g in s.scalars(select(Grant))},
               specs, key=lambda spec: (spec.service_account, spec.connection),
               name=lambda spec: f"{spec.service_account}->{spec.connection}",
               row_name=lambda row: f"{row.service_account.name}->{row.connection.name}",
               create=lambda spec: s.add(Grant(service_account=accounts[spec.service_account],
                                               connection=connections[spec.connection], expires_at=spec.expires,
                                               source="policy", created_by=actor)),
               update=lambda row, spec: _set(row, {"expires_at": spec.expires, "revoked_at": None,
                                                   "revoked_by": None, "source": "policy"}),
               retire=retire)


def _apply_rules(s: Session, specs: tuple[RuleSpec, ...], report: ApplyReport) -> None:
    _reconcile(report, "rule", {r.name: r for r in s.scalars(select(Rule))}, enumerate(specs),
               key=lambda ps: ps[1].name, name=lambda ps: ps[1].name, row_name=lambda row: row.name,
               create=lambda ps: s.add(Rule(name=ps[1].name, position=ps[0], body=ps[1].to_dict())),
               update=lambda row, ps: _set(row, {"position": ps[0], "body": ps[1].to_dict()}),
               retire=_delete(s))


def _apply_campaigns(s: Session, specs: tuple[CampaignSpec, ...], report: ApplyReport) -> None:
    def values(spec: CampaignSpec) -> dict[str, Any]:
        return {
            "scope": spec.to_dict().get("scope", {}),
            "reviewers": spec.reviewers,
            "schedule": spec.schedule,
            "duration_seconds": spec.duration,
            "remind_every_seconds": spec.remind_every,
            "on_deadline": spec.on_deadline,
            "escalate_to": spec.escalate_to,
            "unused_after_seconds": spec.unused_after,
            "enabled": spec.enabled,
        }

    _reconcile(report, "campaign", {c.name: c for c in s.scalars(select(Campaign))}, specs,
               key=lambda spec: spec.name, name=lambda spec: spec.name, row_name=lambda row: row.name,
               create=lambda spec: s.add(Campaign(name=spec.name, **values(spec))),
               update=lambda row, spec: _set(row, values(spec)), retire=_delete(s))


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
