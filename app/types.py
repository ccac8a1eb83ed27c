"""The protocol-neutral vocabulary shared by adapters, the gate and the pure modules.

Adapters turn traffic into an `Operation`; the gate answers with a `Verdict`.
Nothing here does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Protocol = Literal["http", "postgres", "mysql", "ssh"]
Action = Literal["allow", "deny", "review"]

# Statement kinds, least to most dangerous. Anything we cannot classify is treated
# as the last one (fail closed).
KINDS: tuple[str, ...] = ("read", "tcl", "write", "ddl", "dcl", "admin")
MOST_DANGEROUS_KIND = KINDS[-1]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a service account, resolved from a token."""

    service_account: str
    groups: frozenset[str] = frozenset()
    via: Literal["oidc", "token"] = "token"
    subject: str = ""
    # Epoch seconds after which the credential no longer counts (for a JWT: `exp` plus
    # the leeway), taken from what was verified. Sessions enforce it without asking the
    # IdP or the store again. Not part of equality: verdicts do not depend on it.
    expires_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Operation:
    """One thing a runtime wants to do on a connection.

    `kind` is read/tcl/write/ddl/dcl/admin for SQL, read or write for HTTP (by method),
    exec or shell for SSH. `targets` are tables/functions (SQL), the path (HTTP), or
    the command (SSH). `attributes` carry facts such as "unbounded" or "copy_program".
    """

    protocol: str
    connection: str
    kind: str
    text: str = ""
    targets: tuple[str, ...] = ()
    method: str | None = None
    host: str | None = None
    path: str | None = None
    command: str | None = None
    attributes: frozenset[str] = frozenset()
    body: object | None = None  # parsed JSON body of an HTTP request, if any
    fingerprint: str = ""  # the shape: equal for operations that differ only in values
    # What an approve-once covers: a digest of exactly what will run (app/binding.py).
    # Empty: the gate binds to protocol, kind, text and params.
    binding: str = ""
    params: tuple[str | None, ...] = ()  # bound parameter values, as shown to approvers
    body_summary: str = ""  # an HTTP body for people: size, type and digest (the binding covers it)
    # For the reviewer only, never part of a decision or of equality: the request headers
    # that matter (secrets redacted), the body as people read it, and the agent's own
    # justification (X-Airlock-Reason, `SET airlock.reason`).
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    body_text: str = field(default="", compare=False)
    reason: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class MaskSpec:
    """What to mask and how: field/column names, detector names and a strategy."""

    fields: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ()
    strategy: Literal["redact", "partial", "hash"] = "redact"
    rule: str = ""
    # Media types (globs) this rule lets through unmasked when their bodies cannot be
    # inspected (images, archives); any other such body under a mask is refused.
    unmasked_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReviewSpec:
    """How a `review` verdict is to be approved."""

    groups: tuple[str, ...] = ()
    count: int = 1
    hold_seconds: float = 60.0
    expires_after_seconds: float = 3600.0
    slack: bool = True
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of policy evaluation, and then of the gate.

    The gate fills `review_id`/`review_url`/`status` when it held the operation, so an
    adapter can enforce the verdict with no logic of its own.
    """

    action: Action
    rule: str | None = None
    message: str = ""
    masks: tuple[MaskSpec, ...] = ()
    review: ReviewSpec | None = None
    # Filled by the gate only:
    review_id: int | None = None
    review_url: str | None = None
    status: str | None = None  # e.g. approved, rejected, expired, withdrawn, pending, error, deferred
    retry_after: int | None = None
    reason: str = ""  # why approvers rejected it: every adapter shows it to the runtime

    @property
    def allowed(self) -> bool:
        return self.action == "allow"
