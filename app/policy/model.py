"""The validated policy: frozen dataclasses and their JSON-safe dict forms.

`to_dict()` writes only what differs from the defaults, in the shape of the policy file,
so `dump_policy` output reads like a hand-written file and loads back equal.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .values import format_between, format_duration, format_timestamp

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
        _put(d, "description", self.description)
        _put(d, "groups", list(self.groups))
        if self.oidc:
            d["oidc"] = self.oidc.to_dict()
        _put(d, "public_keys", list(self.public_keys))
        return d


@dataclass(frozen=True, slots=True)
class UserSpec:
    email: str
    name: str = ""
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"email": self.email}
        _put(d, "name", self.name)
        _put(d, "groups", list(self.groups))
        _put(d, "roles", list(self.roles))
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
        _put(d, "description", self.description)
        _put(d, "default", self.default)
        _put(d, "slack_channel", self.slack_channel)
        _put(d, "hosts", list(self.hosts))
        inject: dict[str, Any] = {}
        _put(inject, "headers", dict(self.inject_headers))
        _put(inject, "query", dict(self.inject_query))
        _put(d, "inject", inject)
        _put(d, "ca_bundle", self.ca_bundle)
        if self.path_case_sensitive:
            d["path_case_sensitive"] = True
        for key in ("address", "database", "username", "password", "private_key", "host_key", "owner"):
            _put(d, key, getattr(self, key))
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
        _put(d, "days", list(self.days))
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
            _put(d, key, list(getattr(self, key)))
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
class Rule:
    name: str
    match: Match = Match()
    action: str = "deny"
    message: str = ""
    approvers: Approvers | None = None  # review only
    hold: int = DEFAULT_HOLD  # seconds an operation is held waiting for a decision
    expires_after: int = DEFAULT_EXPIRES_AFTER  # seconds a review stays open / an approval valid
    slack: bool = True
    channel: str | None = None
    fields: tuple[str, ...] = ()  # mask only
    detectors: tuple[str, ...] = ()  # mask only
    strategy: str = "redact"  # mask only
    # mask only: media types (globs) let through unmasked when a body cannot be inspected
    unmasked_types: tuple[str, ...] = ()
    description: str = ""
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        _put(d, "description", self.description)
        if not self.enabled:
            d["enabled"] = False
        d["match"] = self.match.to_dict()
        d["action"] = self.action
        _put(d, "message", self.message)
        if self.action == "review" and self.approvers is not None:
            d["approvers"] = {"groups": list(self.approvers.groups), "count": self.approvers.count}
            if self.hold != DEFAULT_HOLD:
                d["hold"] = format_duration(self.hold)
            if self.expires_after != DEFAULT_EXPIRES_AFTER:
                d["expires_after"] = format_duration(self.expires_after)
            if not self.slack:
                d["slack"] = False
            _put(d, "channel", self.channel)
        if self.action == "mask":
            _put(d, "fields", list(self.fields))
            _put(d, "detectors", list(self.detectors))
            d["strategy"] = self.strategy
            _put(d, "unmasked_types", list(self.unmasked_types))
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        """Validate a rule dict (e.g. from the store's JSON); raises PolicyError with line 0."""
        from .rules import rule_from_dict

        return rule_from_dict(data)


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
        _put(d, "description", self.description)
        if not self.enabled:
            d["enabled"] = False
        scope: dict[str, Any] = {}
        _put(scope, "connections", list(self.connections))
        _put(scope, "service_accounts", list(self.service_accounts))
        _put(d, "scope", scope)
        d["reviewers"] = self.reviewers
        d["schedule"] = self.schedule
        d["duration"] = format_duration(self.duration)
        if self.remind_every is not None:
            d["remind_every"] = format_duration(self.remind_every)
        d["on_deadline"] = self.on_deadline
        _put(d, "escalate_to", self.escalate_to)
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
            _put(d, key, [item.to_dict() for item in getattr(self, key)])
        return d

    def default_for(self, connection: ConnectionSpec) -> str:
        return connection.default or self.default

    def connection(self, name: str) -> ConnectionSpec | None:
        return next((c for c in self.connections if c.name == name), None)

    def service_account(self, name: str) -> ServiceAccountSpec | None:
        return next((s for s in self.service_accounts if s.name == name), None)


def _put(d: dict[str, Any], key: str, value: object) -> None:
    if value:
        d[key] = value
