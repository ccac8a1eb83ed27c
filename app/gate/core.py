"""The gate: the one facade every adapter calls, and the only place decisions are made.

    authenticate -> grant + policy (pure evaluate) -> review: create and wait -> audit

Adapters get back a `Verdict` they can enforce with no logic of their own:
- action "allow": let it through, applying `verdict.masks`;
- action "deny": refuse with `verdict.rule` / `verdict.message`; `status` says why
  ("denied", "rejected" with the approvers' `reason`, "expired", "withdrawn" when the
  runtime left while held, or "error" when airlock itself failed: HTTP maps that to 503);
- action "review": still pending after the hold; tell the runtime `review_id`,
  `review_url` and `retry_after`.

The gate is built with a store (`GateStore`: policy snapshot, reviews, audit) and an
authenticator; by default the SQLAlchemy ones. Any exception inside the gate becomes a
deny (fail closed).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Protocol, Sequence

from app.identity import AuthError, IdentityUnavailable
from app.masking import Masker
from app.policy import evaluate
from app.policy.engine import NO_GRANT
from app.policy.values import format_timestamp
from app.redaction import scrub
from app.snapshot import Snapshot, Target
from app.types import MaskSpec, Operation, Principal, Verdict

from .holds import GrantCheck, OnHold, error_verdict, hold
from .shapes import ShapeMemory
from .store import GateStore, Recording
from .verdicts import VerdictCache

log = logging.getLogger("app.gate")

# Version bumps arrive on the bus as they commit (LISTEN/NOTIFY on PostgreSQL, the bus
# poll on SQLite); reading the version at most this far apart is the safety net when a
# notification is lost. Either way a change reaches every open session within 1 s.
VERSION_TTL = 0.5
AUTH_AUDIT_EVERY = 10.0  # seconds between audit entries for the same failing login
NO_ALLOW_RULE = "no-allow-rule"  # what refuses a needs_rule operation that only the default allowed


class Authenticating(Protocol):
    async def authenticate_async(self, credential: str, claimed: str | None = None) -> Principal: ...


class Unavailable(Exception):
    """airlock cannot decide right now (store or identity provider down): refuse with 503-like errors."""


class Gate:
    def __init__(self, *, store: GateStore | None = None, authenticator: Authenticating | None = None,
                 mask_salt=None, version_ttl: float = VERSION_TTL):
        if store is None:
            from .sqlstore import SqlGateStore
            store = SqlGateStore()
        if authenticator is None:
            from app.identity import Authenticator
            authenticator = Authenticator(version_source=lambda: self._version or 0)
        self.store = store
        self.authenticator = authenticator
        self._mask_salt = mask_salt
        self._version_ttl = version_ttl
        self._version: int | None = None
        self._version_checked = float("-inf")  # not 0: the monotonic clock may be young
        self._snapshot: Snapshot | None = None
        self._snapshot_lock = asyncio.Lock()
        self.verdicts = VerdictCache()
        self.shapes = ShapeMemory(self)
        self._maskers: dict[tuple[MaskSpec, ...], Masker] = {}
        self._auth_failures: dict[tuple[str, str, str], tuple[float, int]] = {}

    @property
    def version(self) -> int | None:
        """The store version of the policy this gate decides with now."""
        return self._version

    # -- identity ---------------------------------------------------------------------

    async def authenticate(self, credential: str | None, claimed: str | None = None, *, protocol: str = "",
                           client: str = "") -> Principal:
        """Resolve a token to a principal, or raise AuthError (adapters answer 407/28P01/1045).
        A credential that was presented and refused is audited (`auth.failed`)."""
        if not credential:
            raise AuthError("no credentials")
        try:
            await self._fresh()
        except Exception:
            raise Unavailable("the airlock store is unavailable") from None
        try:
            return await self.authenticator.authenticate_async(credential, claimed)
        except IdentityUnavailable as exc:
            raise Unavailable(f"airlock cannot check credentials right now ({exc.reason})") from None
        except AuthError as exc:
            await self._audit_auth_failure(claimed or "", exc.reason, protocol, client)
            raise

    async def _audit_auth_failure(self, claimed: str, reason: str, protocol: str, client: str) -> None:
        # One entry per (protocol, user, reason) every AUTH_AUDIT_EVERY seconds, with the
        # count since: a client retrying a bad token in a loop must not flood the chain.
        key = (protocol, claimed, reason)
        now = time.monotonic()
        last, suppressed = self._auth_failures.get(key, (0.0, 0))
        if last and now - last < AUTH_AUDIT_EVERY:
            self._auth_failures[key] = (last, suppressed + 1)
            return
        self._auth_failures[key] = (now, 0)
        if len(self._auth_failures) > 10_000:
            self._auth_failures.clear()
        data = {"protocol": protocol, "user": scrub(claimed)[:200], "reason": reason[:500],
                "client": client[:100], "refused_since_last_entry": suppressed}
        try:
            await asyncio.to_thread(self.store.audit, "runtime", "auth.failed", f"user:{data['user']}", data)
        except Exception:  # the refusal stands either way; the audit gap is logged
            log.warning("could not audit a failed runtime authentication (%s)", protocol)

    async def authenticate_key(self, public_key: str) -> Principal:
        """The service account that registered this OpenSSH public key (`TYPE BASE64`), or
        AuthError. The SSH server has already checked that the client holds its private half."""
        try:
            await self._fresh()
            return await asyncio.to_thread(self.store.principal_for_public_key, public_key)
        except AuthError:
            raise
        except Exception:
            raise Unavailable("the airlock store is unavailable") from None

    # -- targets ----------------------------------------------------------------------

    async def target(self, connection: str) -> Target | None:
        """The connection's settings and decrypted credentials, for the adapter to inject."""
        snap = await self._fresh()
        return snap.targets.get(connection)

    async def connection_for_host(self, host: str) -> Target | None:
        """The http connection that declares this host (exact names first, then globs).

        Routing only: whether the caller may use it is decided by `decide` (no grant: deny).
        """
        snap = await self._fresh()
        return snap.http_route(host)

    def masker(self, masks: tuple[MaskSpec, ...]) -> Masker:
        """A compiled masker for a verdict's masks (cached: verdicts repeat)."""
        masker = self._maskers.get(masks)
        if masker is None:
            salt = self._mask_salt
            if salt is None:  # the store's salt, read as each masker is built
                from app.vault import mask_salt
                salt = mask_salt()
            masker = self._maskers[masks] = Masker(masks, salt)
        return masker

    async def connections_for(self, principal: Principal, protocol: str) -> list[Target]:
        """Connections of one protocol this principal holds a live grant on."""
        snap = await self._fresh()
        names = snap.granted(principal.service_account, datetime.now(timezone.utc))
        return [t for t in snap.targets.values() if t.type == protocol and t.name in names]

    # -- decisions --------------------------------------------------------------------

    async def decide(
        self,
        principal: Principal,
        operation: Operation,
        *,
        recording: Recording | None = None,
        run_id: str | None = None,
        hold: float | None = None,
        on_hold: OnHold | None = None,
        record_allows: bool = True,
        gone: asyncio.Future | None = None,
        defer_review: bool = False,
        needs_rule: bool = False,
    ) -> Verdict:
        """`needs_rule=True`: an operation that is refused unless a rule allows it (SSH port
        forwarding): a connection's default allow counts as a denial.

        `record_allows=False`: the adapter records allowed operations in an event of its
        own (one event per operation on hot paths, e.g. a statement with its result);
        denials, holds, approvals and errors are recorded here all the same.

        `gone` completes (with a reason) when the runtime disconnects or cancels: a held
        operation is then withdrawn (status "withdrawn"), and an approval is left unused.
        `defer_review=True`: an operation that needs a review is not held but answered
        with action "review", status "deferred"; the adapter must ask again with the whole
        operation (e.g. a statement with its parameters, at Bind) before running it."""
        try:
            verdict = await self._decide(principal, operation, recording, run_id, hold, on_hold, gone,
                                         defer_review, needs_rule)
        except Exception as exc:  # fail closed, whatever broke
            log.exception("gate failed; refusing %s on %s", operation.kind, operation.connection)
            verdict = error_verdict(f"airlock could not decide ({type(exc).__name__}); the operation was refused")
        if recording is not None and verdict.status != "deferred" and (
                record_allows or verdict.action != "allow" or verdict.status is not None):
            recording.event("decision", decision_event(operation, verdict))
        return verdict

    async def decide_parts(
        self,
        principal: Principal,
        whole: Operation,
        parts: Sequence[Operation],
        *,
        recording: Recording | None = None,
        run_id: str | None = None,
        hold: float | None = None,
        on_hold: OnHold | None = None,
        gone: asyncio.Future | None = None,
    ) -> Verdict:
        """One command line made of several commands (an SSH exec or shell line): each part
        is evaluated on its own, and the strictest verdict wins. A denied part denies the
        line; a part under review holds the whole line, so the approval binds exactly the
        line the approver saw (approve-once) and never a part of it."""
        try:
            verdict = await self._decide_parts(principal, whole, parts, recording, run_id, hold, on_hold, gone)
        except Exception as exc:  # fail closed, whatever broke
            log.exception("gate failed; refusing %s on %s", whole.kind, whole.connection)
            verdict = error_verdict(f"airlock could not decide ({type(exc).__name__}); the operation was refused")
        if recording is not None:
            recording.event("decision", decision_event(whole, verdict))
        return verdict

    async def _decide_parts(self, principal, whole, parts, recording, run_id, hold_for, on_hold, gone) -> Verdict:
        if not parts:
            raise ValueError("a command line with no parts")
        snap = await self._fresh()
        verdicts = [self.verdicts.evaluate(snap.policy, snap.version, principal, part) for part in parts]
        session_id = recording.id if recording is not None else None
        for verdict in verdicts:
            if verdict.action == "deny":
                verdict = said_revoked(snap, principal, whole, verdict)
                await self._audit_denial(principal, whole, verdict, session_id)
                return replace(verdict, status="denied")
        review = next((v for v in verdicts if v.action == "review"), None)
        if review is None:
            return Verdict("allow", masks=tuple(m for v in verdicts for m in v.masks))
        return await hold(self.store, principal, whole, review, run_id=run_id, session_id=session_id,
                          hold=hold_for, on_hold=on_hold, gone=gone, grant=self._grant_check(principal, whole))

    async def _decide(self, principal, operation, recording, run_id, hold_for, on_hold, gone, defer_review,
                      needs_rule=False) -> Verdict:
        snap = await self._fresh()
        verdict = self.verdicts.evaluate(snap.policy, snap.version, principal, operation)
        if needs_rule and verdict.action == "allow" and verdict.rule is None:
            verdict = Verdict("deny", rule=NO_ALLOW_RULE,
                              message=f"{operation.text} is refused unless a rule allows it")
        if verdict.action == "allow":
            return verdict
        session_id = recording.id if recording is not None else None
        if verdict.action == "deny":
            verdict = said_revoked(snap, principal, operation, verdict)
            await self._audit_denial(principal, operation, verdict, session_id)
            return replace(verdict, status="denied")
        if defer_review:
            return replace(verdict, status="deferred")
        return await hold(self.store, principal, operation, verdict, run_id=run_id, session_id=session_id,
                          hold=hold_for, on_hold=on_hold, gone=gone, grant=self._grant_check(principal, operation))

    def _grant_check(self, principal: Principal, operation: Operation) -> GrantCheck:
        """For a hold: None while the principal still holds a live grant on the operation's
        connection, else the refusal to give (the grant was revoked or expired meanwhile).
        `look=True` reads the store version first: an approval is used only under a grant
        the store still has, not one a snapshot up to VERSION_TTL old remembers."""

        async def check(look: bool = False) -> Verdict | None:
            if look:
                self.invalidate()
            snap = await self._fresh()
            if snap.policy.has_grant(principal.service_account, operation.connection, datetime.now(timezone.utc)):
                return None
            verdict = evaluate(snap.policy, operation, principal)
            if verdict.action != "deny" or verdict.rule != NO_GRANT:  # has_grant and evaluate disagree: refuse
                verdict = Verdict("deny", rule=NO_GRANT, message=f"service account {principal.service_account!r} "
                                  f"has no grant for connection {operation.connection!r}")
            return said_revoked(snap, principal, operation, verdict)

        return check

    async def give_back(self, verdict: Verdict, reason: str) -> None:
        """The adapter could not send an operation it was approved for (its runtime left):
        an approve-once use returns, so an identical retry may still use it."""
        if verdict.status == "approved" and verdict.review_id is not None:
            await asyncio.to_thread(self.store.release_use, verdict.review_id, reason)

    async def _audit_denial(self, principal: Principal, operation: Operation, verdict: Verdict,
                            session_id: str | None) -> None:
        await asyncio.to_thread(self.store.audit, principal.service_account, "decision.deny", operation.connection, {
            "rule": verdict.rule,
            "message": verdict.message,
            "protocol": operation.protocol,
            "kind": operation.kind,
            "operation": operation.text[:2000],
            "session_id": session_id,
        })

    # -- what a verdict stays valid under ---------------------------------------------

    def stamp(self) -> tuple[int, int] | None:
        """What a verdict given now stays valid under: equal stamps, same verdicts (the
        policy version and the minute, as in the verdict cache). None when the gate must
        look at the store before deciding again, so callers holding verdicts of their own
        ask the gate instead."""
        snap = self._snapshot
        now = time.time()
        if snap is None or now >= snap.stale_at or time.monotonic() - self._version_checked >= self._version_ttl:
            return None
        return snap.version, int(now // 60)

    async def current_stamp(self) -> tuple[int, int] | None:
        """stamp(), after reading the store version if it is due."""
        await self._fresh()
        return self.stamp()

    def shares_verdict(self, principal: Principal, op: Operation) -> bool:
        """Whether every operation that differs from `op` only in its text gets op's verdict
        (no rule that could apply reads the text)."""
        snap = self._snapshot
        return snap is not None and op.body is None and not snap.policy.depends_on_text(op, principal)

    # -- policy snapshot --------------------------------------------------------------

    async def _fresh(self) -> Snapshot:
        """The compiled policy for the current store version (checked at most every 0.5 s)."""
        now = time.monotonic()
        fresh = self._snapshot is not None and time.time() < self._snapshot.stale_at
        if fresh and now - self._version_checked < self._version_ttl:
            return self._snapshot  # type: ignore[return-value]
        self.store.subscribe_versions(self.invalidate)
        async with self._snapshot_lock:
            fresh = self._snapshot is not None and time.time() < self._snapshot.stale_at
            if fresh and time.monotonic() - self._version_checked < self._version_ttl:
                return self._snapshot  # type: ignore[return-value]
            version = await asyncio.to_thread(self.store.read_version)
            if not fresh or version != self._snapshot.version:  # type: ignore[union-attr]
                self._snapshot = await asyncio.to_thread(self.store.load_snapshot)
                self.verdicts.clear()
                self.shapes.clear()
            self._version = self._snapshot.version
            self._version_checked = time.monotonic()
            return self._snapshot

    def invalidate(self, *_event: str) -> None:
        """Read the version again before the next decision (the bus calls this on a bump)."""
        self._version_checked = float("-inf")  # not 0: the monotonic clock may be young


def said_revoked(snap: Snapshot, principal: Principal, operation: Operation, verdict: Verdict) -> Verdict:
    """A no-grant refusal names the revocation when the pair had a grant that was revoked:
    the runtime held one, and must be able to tell "revoked" from a fault or a typo."""
    if verdict.rule != NO_GRANT:
        return verdict
    when = snap.revoked.get((principal.service_account, operation.connection))
    if when is None:
        return verdict
    return replace(verdict, message=f"service account {principal.service_account!r} has no grant for connection "
                                    f"{operation.connection!r}: it was revoked at {format_timestamp(when)}")


def decision_event(operation: Operation, verdict: Verdict) -> dict[str, Any]:
    """The recording's "decision" event for a verdict."""
    event: dict[str, Any] = {
        "action": verdict.action,
        "status": verdict.status,
        "rule": verdict.rule,
        "kind": operation.kind,
        "operation": operation.text[:4000],
    }
    if verdict.message:
        event["message"] = verdict.message
    if verdict.reason:
        event["reason"] = verdict.reason
    if verdict.review_id is not None:
        event["review_id"] = verdict.review_id
    if verdict.masks:
        # The mask rules that apply, as outputs name them: whether a value was masked is
        # known only from the answer, and its output event says how many ("masked": N).
        event["masks"] = sorted({m.rule for m in verdict.masks})
    return event
