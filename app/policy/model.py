"""The validated policy: frozen dataclasses and their JSON-safe dict forms.

`to_dict()` writes only what differs from the defaults, in the shape of the policy file,
so `dump_policy` output reads like a hand-written file and loads back equal.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .values import format_between, format_duration, format_timestamp

if TYPE_CHECKING:  # Rule lives with its validation (rules.py), which builds on this module
    from .rules import Rule

ACTIONS = ("allow", "deny", "review", "mask")
STRATEGIES = ("redact", "partial", "hash")
ROLES = ("admin", "approver", "auditor")
CONNECTION_TYPES = ("http", "postgres", "mysql", "ssh")
ON_DEADLINE = ("revoke", "keep", "escalate")
# What a granted operation that no allow, review or deny rule matches gets.
DEFAULTS = ("allow", "review", "deny")
DEFAULT_HOLD = 60
DEFAULT_EXPIRES_AFTER = 3600
DEFAULT_CAMPAIGN_DURATION = 14 * 86400
DEFAULT_UNUSED_AFTER = 30 * 86400


@dataclass(frozen=True, slots=True)
class OidcSpec:
    issuer: str
    subject: str
    groups_claim: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"issuer": self.issuer, "subject": self.subject}
        if self.groups_claim:
            d["groups_claim"] = self.groups_claim
        return d


@dataclass(frozen=True, slots=True)
class ServiceAccountSpec:
    name: str
    groups: tuple[str, ...] = ()
    oidc: OidcSpec | None = None
    public_keys: tuple[str, ...] = ()  # OpenSSH public keys for the SSH relay
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        put_set(d, "description", self.description)
        put_set(d, "groups", list(self.groups))
        if self.oidc:
            d["oidc"] = self.oidc.to_dict()
        put_set(d, "public_keys", list(self.public_keys))
        return d


@dataclass(frozen=True, slots=True)
class UserSpec:
    email: str
    name: str = ""
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"email": self.email}
        put_set(d, "name", self.name)
        put_set(d, "groups", list(self.groups))
        put_set(d, "roles", list(self.roles))
        return d


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """A target. Secret-bearing fields hold `${env:..}`/`${file:..}` text, resolved by the vault."""

    name: str
    type: str
    owner: str = ""  # a user's email or "group:NAME"
    description: str = ""
    slack_channel: str = ""  # where its reviews are posted when the rule names no channel
    hosts: tuple[str, ...] = ()  # http
    inject_headers: tuple[tuple[str, str], ...] = ()  # http
    inject_query: tuple[tuple[str, str], ...] = ()  # http
    ca_bundle: str = ""  # http: PEM file of extra CAs trusted for this connection's upstream TLS
    path_case_sensitive: bool = False  # http: path rules compare case and Unicode forms exactly
    address: str = ""  # host:port, default port filled in
    database: str = ""
    username: str = ""
    password: str = ""
    private_key: str = ""  # ssh
    host_key: str = ""  # ssh: pinned "ALGO BASE64"
    default: str = ""  # allow | review | deny; "" takes the file's top-level default

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        put_set(d, "description", self.description)
        put_set(d, "default", self.default)
        put_set(d, "slack_channel", self.slack_channel)
        put_set(d, "hosts", list(self.hosts))
        inject: dict[str, Any] = {}
        put_set(inject, "headers", dict(self.inject_headers))
        put_set(inject, "query", dict(self.inject_query))
        put_set(d, "inject", inject)
        put_set(d, "ca_bundle", self.ca_bundle)
        if self.path_case_sensitive:
            d["path_case_sensitive"] = True
        for key in ("address", "database", "username", "password", "private_key", "host_key", "owner"):
            put_set(d, key, getattr(self, key))
        return d


@dataclass(frozen=True, slots=True)
class GrantSpec:
    service_account: str
    connection: str
    expires: datetime | None = None  # aware UTC; None = standing grant

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"service_account": self.service_account, "connection": self.connection}
        if self.expires is not None:
            d["expires"] = format_timestamp(self.expires)
        return d

    def active_at(self, now: datetime) -> bool:
        return self.expires is None or now < self.expires


@dataclass(frozen=True, slots=True)
class TimeWindow:
    days: tuple[str, ...] = ()  # mon..sun, expanded and in week order
    between: tuple[int, int] | None = None  # minutes since local midnight; start > end wraps
    tz: str = "UTC"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        put_set(d, "days", list(self.days))
        if self.between is not None:
            d["between"] = format_between(*self.between)
        d["tz"] = self.tz
        return d


@dataclass(frozen=True, slots=True)
class Match:
    """Conditions of a rule; every key given must match (AND), any value of a key may (OR).

    An empty tuple means the key was not given and constrains nothing.
    """

    protocol: tuple[str, ...] = ()
    connection: tuple[str, ...] = ()
    service_account: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    method: tuple[str, ...] = ()
    host: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    time: TimeWindow | None = None
    body: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (json path, patterns)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for key in LIST_MATCH_KEYS:
            put_set(d, key, list(getattr(self, key)))
        if self.time is not None:
            d["time"] = self.time.to_dict()
        if self.body:
            d["body"] = {path: list(patterns) for path, patterns in self.body}
        return d


LIST_MATCH_KEYS = ("protocol", "connection", "service_account", "groups", "kind", "method",
                   "host", "path", "command", "tables", "attributes")


@dataclass(frozen=True, slots=True)
class Approvers:
    groups: tuple[str, ...]
    count: int = 1


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    name: str
    schedule: str
    connections: tuple[str, ...] = ()  # scope; empty = every connection
    service_accounts: tuple[str, ...] = ()  # scope; empty = every service account
    reviewers: str = "owner"  # "owner" or "group:NAME"
    duration: int = DEFAULT_CAMPAIGN_DURATION
    remind_every: int | None = None
    on_deadline: str = "revoke"
    escalate_to: str | None = None  # "group:NAME" for on_deadline: escalate; None = admins
    unused_after: int = DEFAULT_UNUSED_AFTER  # suggest revoking grants unused this long
    enabled: bool = True
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        put_set(d, "description", self.description)
        if not self.enabled:
            d["enabled"] = False
        scope: dict[str, Any] = {}
        put_set(scope, "connections", list(self.connections))
        put_set(scope, "service_accounts", list(self.service_accounts))
        put_set(d, "scope", scope)
        d["reviewers"] = self.reviewers
        d["schedule"] = self.schedule
        d["duration"] = format_duration(self.duration)
        if self.remind_every is not None:
            d["remind_every"] = format_duration(self.remind_every)
        d["on_deadline"] = self.on_deadline
        put_set(d, "escalate_to", self.escalate_to)
        if self.unused_after != DEFAULT_UNUSED_AFTER:
            d["unused_after"] = format_duration(self.unused_after)
        return d


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    version: int = 1
    default: str = "allow"  # for connections that set no default of their own
    service_accounts: tuple[ServiceAccountSpec, ...] = ()
    users: tuple[UserSpec, ...] = ()
    connections: tuple[ConnectionSpec, ...] = ()
    grants: tuple[GrantSpec, ...] = ()
    rules: tuple[Rule, ...] = ()
    campaigns: tuple[CampaignSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": self.version}
        if self.default != "allow":
            d["default"] = self.default
        for key in ("service_accounts", "users", "connections", "grants", "rules", "campaigns"):
            put_set(d, key, [item.to_dict() for item in getattr(self, key)])
        return d

    def default_for(self, connection: ConnectionSpec) -> str:
        return connection.default or self.default

    def connection(self, name: str) -> ConnectionSpec | None:
        return next((c for c in self.connections if c.name == name), None)

    def service_account(self, name: str) -> ServiceAccountSpec | None:
        return next((s for s in self.service_accounts if s.name == name), None)


def put_set(d: dict[str, Any], key: str, value: object) -> None:
    """d[key] = value, for a value that is set (a dict form writes no empty keys)."""
    if value:
        d[key] = value
