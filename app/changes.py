"""Edits from the portal (and the campaigns service), through the same path as `airlock apply`.

Policy entities (service accounts, policy users, connections, rules) are edited by
exporting the store as a document, changing it, validating the whole document again
(`document_from_dict`: the checks of a policy file, references included) and applying it
with `apply_policy`, which audits and bumps the policy version. Secrets stay write-only:
the exported placeholders resolve to the stored values, new ones come from the form.

Grants made in the portal, portal users and tokens are not part of the file; their
changes are validated here, audited, and bump the version the gate watches.
"""
from __future__ import annotations

import secrets as pysecrets
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app import audit
from app.errors import NotFound
from app.identity import issue_token, revoke_token
from app.inventory import ApplyReport, apply_policy, export_policy, placeholder_environ
from app.models import Connection, Grant, Group, ServiceAccount, Token, User, user_by_email, utcnow
from app.policy import PolicyDocument, PolicyError, document_from_dict, secret_refs
from app.versions import bump_version

Mutation = Callable[[dict[str, Any]], None]


class ChangeError(ValueError):
    """A change that cannot be made; `problems` are safe to show."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class ChangeNotFound(ChangeError, NotFound):
    """The change names something that does not exist (the API answers 404)."""


def policy_problems(exc: PolicyError) -> list[str]:
    return [i.format(exc.source) for i in exc.errors]


def _check_refs(doc: PolicyDocument, environ: dict[str, str]) -> None:
    """Only placeholders we can fill: a `${file:..}` or a foreign `${env:..}` would read the
    portal host's files or environment into a credential that airlock then sends out."""
    bad = []
    for conn in doc.connections:
        values = [conn.password, conn.private_key] + [v for _, v in conn.inject_headers + conn.inject_query]
        for value in values:
            for kind, arg in secret_refs(value or ""):
                if kind != "env" or arg not in environ:
                    bad.append(f"connection {conn.name}: ${{{kind}:{arg}}} cannot be used from the portal; "
                               "type the secret into the connection form instead")
    if bad:
        raise ChangeError(bad)


def apply_document(s, doc: PolicyDocument, *, actor: str, new_secrets: dict[str, str] | None = None) -> ApplyReport:
    environ = {**placeholder_environ(s), **(new_secrets or {})}
    _check_refs(doc, environ)
    return apply_policy(s, doc, actor=actor, environ=environ)


def edit(s, actor: str, mutate: Mutation, *, new_secrets: dict[str, str] | None = None) -> ApplyReport:
    data = export_policy(s).to_dict()
    mutate(data)
    try:
        doc = document_from_dict(data, source="policy")
    except PolicyError as exc:
        raise ChangeError(policy_problems(exc)) from None
    return apply_document(s, doc, actor=actor, new_secrets=new_secrets)


def replace_item(data: dict[str, Any], key: str, ident: str, value: str | None, item: dict[str, Any] | None) -> None:
    """Put `item` in place of the entry whose `ident` field is `value` (None: append); item None deletes."""
    items = list(data.get(key) or [])
    index = next((i for i, x in enumerate(items) if value is not None and x.get(ident) == value), None)
    if value is not None and index is None:
        raise ChangeNotFound(f"{key[:-1].replace('_', ' ')} {value!r} does not exist (any more)")
    if item is None:
        items.pop(index)  # type: ignore[arg-type]
    elif index is None:
        if any(x.get(ident) == item.get(ident) for x in items):
            raise ChangeError(f"{key[:-1].replace('_', ' ')} {item.get(ident)!r} already exists")
        items.append(item)
    else:
        items[index] = item
    data[key] = items


# -- grants ----------------------------------------------------------------------------

def add_grant(s, actor: str, service_account: str, connection: str, expires_at: datetime | None) -> Grant:
    now = utcnow()
    sa = s.scalars(select(ServiceAccount).where(ServiceAccount.name == service_account)).first()
    conn = s.scalars(select(Connection).where(Connection.name == connection)).first()
    problems = []
    if sa is None or sa.disabled:
        problems.append(f"unknown service account {service_account!r}")
    if conn is None:
        problems.append(f"unknown connection {connection!r}")
    if expires_at is not None and expires_at <= now:
        problems.append("the expiry must be in the future")
    if problems:
        raise ChangeError(problems)
    grant = s.scalars(select(Grant).where(Grant.service_account_id == sa.id, Grant.connection_id == conn.id)).first()
    if grant is not None and grant.active_at(now):
        raise ChangeError(f"{service_account} already has a grant on {connection}")
    if grant is None:
        grant = Grant(service_account=sa, connection=conn)
        s.add(grant)
    # A revoked or expired grant comes back as a portal grant, so `apply` leaves it be.
    grant.expires_at, grant.revoked_at, grant.revoked_by = expires_at, None, None
    grant.source, grant.created_by, grant.created_at = "portal", actor, now
    s.flush()
    bump_version(s)
    audit.append(s, actor, "grant.add", f"{service_account}->{connection}", {
        "grant_id": grant.id, "expires": expires_at.isoformat() if expires_at else None})
    return grant


def _grant(s, grant_id: int) -> Grant:
    grant = s.get(Grant, grant_id)
    if grant is None:
        raise ChangeNotFound(f"grant {grant_id} does not exist")
    return grant


def expire_grant(s, actor: str, grant_id: int, at: datetime | None = None) -> Grant:
    grant, now = _grant(s, grant_id), utcnow()
    at = at or now
    if at < now - timedelta(seconds=5):
        raise ChangeError("a grant cannot expire in the past; revoke it instead")
    if not grant.active_at(now):
        raise ChangeError("this grant is no longer active")
    grant.expires_at = at
    bump_version(s)
    audit.append(s, actor, "grant.expire", f"{grant.service_account.name}->{grant.connection.name}",
                 {"grant_id": grant.id, "expires": at.isoformat()})
    return grant


def revoke_grant(s, actor: str, grant_id: int) -> Grant:
    grant = _grant(s, grant_id)
    if grant.revoked_at is not None:
        raise ChangeError("this grant is already revoked")
    grant.revoked_at, grant.revoked_by = utcnow(), actor
    bump_version(s)
    audit.append(s, actor, "grant.revoke", f"{grant.service_account.name}->{grant.connection.name}",
                 {"grant_id": grant.id, "source": grant.source})
    return grant


# -- tokens ----------------------------------------------------------------------------

def issue_sa_token(s, actor: str, service_account: str, ttl: timedelta, description: str = ""):
    issued = issue_token(s, service_account, ttl, created_by=actor, description=description)
    audit.append(s, actor, "token.issue", service_account,
                 {"token_id": issued.id, "expires_at": issued.expires_at.isoformat(), "via": "portal"})
    return issued


def revoke_sa_token(s, actor: str, token_id: int) -> None:
    row = s.get(Token, token_id)
    if row is None:
        raise ChangeNotFound(f"token {token_id} does not exist")
    revoke_token(s, token_id, by=actor)
    audit.append(s, actor, "token.revoke", row.service_account.name, {"token_id": token_id, "via": "portal"})


# -- users -----------------------------------------------------------------------------

def check_user_fields(email: str, name: str, roles: list[str], groups: list[str]) -> None:
    """The checks a policy file's `users:` entry gets."""
    entry: dict[str, Any] = {"email": email}
    if name:
        entry["name"] = name
    if roles:
        entry["roles"] = roles
    if groups:
        entry["groups"] = groups
    try:
        document_from_dict({"version": 1, "users": [entry]}, source="user")
    except PolicyError as exc:
        raise ChangeError([i.message if not i.path else f"{i.path.split('.')[-1]}: {i.message}"
                           for i in exc.errors]) from None


def _group_rows(s, names: list[str]) -> list[Group]:
    existing = {g.name: g for g in s.scalars(select(Group).where(Group.name.in_(names)))} if names else {}
    for name in names:
        if name not in existing:
            existing[name] = Group(name=name)
            s.add(existing[name])
    return [existing[n] for n in sorted(set(names))]


def new_password() -> str:
    return pysecrets.token_urlsafe(15)


def create_local_user(s, actor: str, email: str, name: str, roles: list[str], groups: list[str]) -> str:
    check_user_fields(email, name, roles, groups)
    if user_by_email(s, email) is not None:
        raise ChangeError(f"a user {email} already exists")
    password = new_password()
    s.add(User(email=email, name=name, roles=sorted(set(roles)), groups=_group_rows(s, groups), source="portal",
               password_hash=generate_password_hash(password)))
    s.flush()
    audit.append(s, actor, "user.create", email, {"roles": sorted(set(roles)), "groups": sorted(set(groups))})
    return password


def update_user(s, actor: str, user: User, roles: list[str], groups: list[str], active: bool) -> None:
    check_user_fields(user.email, user.name, roles, groups)
    if user.source == "policy":
        # Declared in the policy: change the declaration, or the next apply undoes it.
        def mutate(data):
            entry = {"email": user.email, **({"name": user.name} if user.name else {}),
                     **({"groups": sorted(set(groups))} if groups else {}),
                     **({"roles": sorted(set(roles))} if roles else {})}
            replace_item(data, "users", "email", user.email, entry if active else None)

        edit(s, actor, mutate)
        return
    before = {"roles": sorted(user.roles or []), "groups": sorted(user.group_names), "active": user.active}
    user.roles, user.groups, user.active = sorted(set(roles)), _group_rows(s, groups), active
    after = {"roles": user.roles, "groups": sorted(set(groups)), "active": active}
    if before != after:
        audit.append(s, actor, "user.update", user.email, {"before": before, "after": after})


def reset_password(s, actor: str, user: User) -> str:
    password = new_password()
    user.password_hash = generate_password_hash(password)
    audit.append(s, actor, "user.password_reset", user.email, {})
    return password
