"""The gate: the one facade every adapter calls, and the only place decisions are made.

    authenticate -> grant + policy (pure evaluate) -> review: create and wait -> audit

Adapters get back a `Verdict` they can enforce with no logic of their own:
- action "allow": let it through, applying `verdict.masks`;
- action "deny": refuse with `verdict.rule` / `verdict.message`; `status` says why
  ("denied", "rejected" with the approvers' `reason`, "expired", "withdrawn" when the
  runtime left while held, or "error" when airlock itself failed: HTTP maps that to 503);
- action "review": still pending after the hold; tell the runtime `review_id`,
  `review_url` and `retry_after`.

Any exception inside the gate becomes a deny (fail closed).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from datetime import datetime, timezone
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Sequence

from sqlalchemy import select

from app import approvals, audit
from app.binding import binding_of
from app.bus import get_bus
from app.db import session_scope
from app.identity import AuthError, Authenticator, IdentityUnavailable
from app.identity.keys import principal_for_public_key
from app.policy import CompiledPolicy, evaluate
from app.recording import SessionRecording
from app.snapshot import Target, load_snapshot, read_version
from app.masking import Masker
from app.models import Review
from app.types import MaskSpec, Operation, Principal, Verdict
from app.vault import mask_salt
from app.versions import VERSION_CHANNEL

log = logging.getLogger(__name__)

# Version bumps arrive on the bus as they commit (LISTEN/NOTIFY on PostgreSQL, the bus
# poll on SQLite); reading the version at most this far apart is the safety net when a
# notification is lost. Either way a change reaches every open session within 1 s.
VERSION_TTL = 0.5
VERDICT_CACHE_SIZE = 4096
AUTH_AUDIT_EVERY = 10.0  # seconds between audit entries for the same failing login
_TEXTUAL = object()  # in the verdict cache: operations of this shape are decided by their text
NO_ALLOW_RULE = "no-allow-rule"  # what refuses a needs_rule operation that only the default allowed

OnHold = Callable[[int, str], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the gate tells the adapter, plus the principal it decided for."""

    verdict: Verdict
    principal: Principal


class Unavailable(Exception):
    """airlock cannot decide right now (store or identity provider down): refuse with 503-like errors."""


def _error(message: str) -> Verdict:
    return Verdict("deny", rule="airlock-error", message=message, status="error")


class Gate:
    def __init__(self, *, version_ttl: float = VERSION_TTL):
        self._version_ttl = version_ttl
        self._version: int | None = None
        self._version_checked = 0.0
        self._snapshot = None
        self._snapshot_lock = asyncio.Lock()
        self._verdicts: OrderedDict[tuple, Verdict] = OrderedDict()
        self._maskers: dict[tuple[MaskSpec, ...], Masker] = {}
        self._auth_failures: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._bus = None  # the bus this gate hears version bumps on
        self.authenticator = Authenticator(version_source=lambda: self._version or 0)

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
        if now - last < AUTH_AUDIT_EVERY:
            self._auth_failures[key] = (last, suppressed + 1)
            return
        self._auth_failures[key] = (now, 0)
        if len(self._auth_failures) > 10_000:
            self._auth_failures.clear()
        data = {"protocol": protocol, "user": audit.scrub(claimed)[:200], "reason": reason[:500],
                "client": client[:100], "refused_since_last_entry": suppressed}
        try:
            await asyncio.to_thread(self._store, lambda s: audit.append(s, "runtime", "auth.failed",
                                                                        f"user:{data['user']}", data))
        except Exception:  # the refusal stands either way; the audit gap is logged
            log.warning("could not audit a failed runtime authentication (%s)", protocol)

    # -- targets ----------------------------------------------------------------------

    async def authenticate_key(self, public_key: str) -> Principal:
        """The service account that registered this OpenSSH public key (`TYPE BASE64`), or
        AuthError. The SSH server has already checked that the client holds its private half."""
        try:
            await self._fresh()
            return await asyncio.to_thread(principal_for_public_key, public_key)
        except AuthError:
            raise
        except Exception:
            raise Unavailable("the airlock store is unavailable") from None

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
            masker = self._maskers[masks] = Masker(masks, mask_salt())
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
        recording: SessionRecording | None = None,
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
            verdict = _error(f"airlock could not decide ({type(exc).__name__}); the operation was refused")
        if recording is not None and verdict.status != "deferred" and (
                record_allows or verdict.action != "allow" or verdict.status is not None):
            recording.event("decision", _decision_event(operation, verdict))
        return verdict

    async def decide_parts(
        self,
        principal: Principal,
        whole: Operation,
        parts: Sequence[Operation],
        *,
        recording: SessionRecording | None = None,
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
            verdict = _error(f"airlock could not decide ({type(exc).__name__}); the operation was refused")
        if recording is not None:
            recording.event("decision", _decision_event(whole, verdict))
        return verdict

    async def _decide_parts(self, principal, whole, parts, recording, run_id, hold, on_hold, gone) -> Verdict:
        if not parts:
            raise ValueError("a command line with no parts")
        snap = await self._fresh()
        verdicts = [self._evaluate(snap.policy, snap.version, principal, part) for part in parts]
        session_id = recording.id if recording is not None else None
        for part, verdict in zip(parts, verdicts):
            if verdict.action == "deny":
                await asyncio.to_thread(self._audit_denial, principal, whole, verdict, session_id)
                return replace(verdict, status="denied")
        review = next((v for v in verdicts if v.action == "review"), None)
        if review is None:
            return Verdict("allow", masks=tuple(m for v in verdicts for m in v.masks))
        return await self._hold(principal, whole, review, run_id, session_id, hold, on_hold, gone)

    async def _decide(self, principal, operation, recording, run_id, hold, on_hold, gone, defer_review,
                      needs_rule=False) -> Verdict:
        snap = await self._fresh()
        verdict = self._evaluate(snap.policy, snap.version, principal, operation)
        if needs_rule and verdict.action == "allow" and verdict.rule is None:
            verdict = Verdict("deny", rule=NO_ALLOW_RULE,
                              message=f"{operation.text} is refused unless a rule allows it")
        if verdict.action == "allow":
            return verdict
        session_id = recording.id if recording is not None else None
        if verdict.action == "deny":
            await asyncio.to_thread(self._audit_denial, principal, operation, verdict, session_id)
            return replace(verdict, status="denied")
        if defer_review:
            return replace(verdict, status="deferred")
        return await self._hold(principal, operation, verdict, run_id, session_id, hold, on_hold, gone)

    def _evaluate(self, policy: CompiledPolicy, version: int, principal: Principal, op: Operation) -> Verdict:
        if op.body is not None:  # unhashable and rarely repeated: don't cache
            return evaluate(policy, op, principal)
        # Rules may have time windows: a cached verdict lives at most until the minute turns.
        minute = int(time.time() // 60)
        verdicts = self._verdicts
        # First by shape without the text: statements that differ only in literals share a
        # verdict when no rule that could apply tests text, command, path or body.
        shape = (version, minute, principal, op.protocol, op.connection, op.kind, op.fingerprint, op.targets,
                 op.attributes, op.method, op.host)
        cached = verdicts.get(shape)
        if cached is not None and cached is not _TEXTUAL:
            verdicts.move_to_end(shape)
            return cached
        if cached is None:
            if policy.depends_on_text(op, principal):
                verdicts[shape] = _TEXTUAL
            else:
                verdict = evaluate(policy, op, principal)
                self._remember(shape, verdict)
                return verdict
        key = (version, minute, principal, op)
        cached = verdicts.get(key)
        if cached is not None:
            verdicts.move_to_end(key)
            return cached
        verdict = evaluate(policy, op, principal)
        self._remember(key, verdict)
        return verdict

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

    def _remember(self, key: tuple, verdict: Verdict) -> None:
        self._verdicts[key] = verdict
        if len(self._verdicts) > VERDICT_CACHE_SIZE:
            self._verdicts.popitem(last=False)

    async def _hold(self, principal, operation, verdict, run_id, session_id, hold, on_hold, gone) -> Verdict:
        operation = replace(operation, fingerprint=review_fingerprint(operation), binding=binding_of(operation))
        standing, used_id = await asyncio.to_thread(self._standing, principal, operation, verdict.rule, session_id)
        if standing:
            return replace(verdict, action="allow", status="approved", message=standing, review_id=used_id)
        wait = verdict.review.hold_seconds if hold is None else hold
        review_id = await asyncio.to_thread(self._open_review, principal, operation, verdict, run_id, session_id, wait)
        url = approvals.review_url(review_id)
        if on_hold is not None:
            result = on_hold(review_id, url)
            if asyncio.iscoroutine(result):
                await result
        try:
            status = await approvals.wait_for_decision(review_id, wait, gone=gone)
            held = replace(verdict, review_id=review_id, review_url=url, status=status)
            if status == "approved":
                # The approval belongs to this operation: use it up so it cannot be replayed.
                # If another process used it first, this one has to ask again.
                used, used_id = await asyncio.to_thread(self._standing, principal, operation, verdict.rule,
                                                        session_id)
                if used and _gone(gone) and used_id is not None:
                    # The runtime left while the approval was being taken: give it back.
                    await asyncio.to_thread(self._store, approvals.release_use, used_id, _why(gone))
                if used and not _gone(gone):
                    return replace(held, action="allow", review_id=used_id or review_id)
                status = "withdrawn" if _gone(gone) else "pending"
                held = replace(held, status=status, message=f"review {review_id} was already used")
            if status == "withdrawn":
                reason = _why(gone)
                await asyncio.to_thread(self._store, approvals.requester_gone, review_id, principal.service_account,
                                        reason)
                return replace(held, action="deny", status="withdrawn",
                               message=f"review {review_id}: the operation was withdrawn ({reason}); nothing ran")
            if status == "pending":
                return replace(held, action="review", retry_after=max(1, int(min(wait, 30))))
            reason = await asyncio.to_thread(self._reason, review_id) if status == "rejected" else ""
        except Exception as exc:
            # The review is stored and stays decidable: refuse (503 / 58000) but hand the
            # runtime its id, so it can retry once the store is back and the review decided.
            log.warning("store failed while review %s was held: %s", review_id, type(exc).__name__)
            return replace(_error(f"the airlock store became unavailable while review {review_id} was held; "
                                  f"retry later: {url}"),
                           review_id=review_id, review_url=url, retry_after=max(1, int(min(wait, 30))))
        return replace(held, action="deny", reason=reason,
                       message=f"review {review_id} was {status}" + (f": {reason}" if reason else ""))

    # -- store work (runs in threads) -------------------------------------------------

    async def give_back(self, verdict: Verdict, reason: str) -> None:
        """The adapter could not send an operation it was approved for (its runtime left):
        an approve-once use returns, so an identical retry may still use it."""
        if verdict.status == "approved" and verdict.review_id is not None:
            await asyncio.to_thread(self._store, approvals.release_use, verdict.review_id, reason)

    def _standing(self, principal: Principal, operation: Operation, rule: str | None,
                  session_id: str | None = None) -> tuple[str | None, int | None]:
        with session_scope() as s:
            return approvals.standing_use(
                s,
                service_account=principal.service_account,
                connection=operation.connection,
                fingerprint=operation.fingerprint,
                binding=operation.binding,
                rule=rule,
                ran={**approvals.ran(operation), **({"session_id": session_id} if session_id else {})},
            )

    @staticmethod
    def _store(fn, *args) -> None:
        with session_scope() as s:
            fn(s, *args)

    @staticmethod
    def _reason(review_id: int) -> str:
        with session_scope() as s:
            return s.scalar(select(Review.reason).where(Review.id == review_id)) or ""

    def _open_review(self, principal, operation, verdict, run_id, session_id, wait) -> int:
        with session_scope() as s:
            existing = approvals.find_pending(
                s,
                service_account=principal.service_account,
                connection=operation.connection,
                binding=operation.binding,
                rule=verdict.rule or "",
            )
            if existing is not None:
                approvals.held_again(s, existing, wait)
                return existing.id
            review = approvals.create_review(
                s, principal=principal, operation=operation, verdict=verdict, run_id=run_id, session_id=session_id,
                hold_seconds=wait
            )
            s.flush()
            return review.id

    def _audit_denial(self, principal, operation, verdict, session_id) -> None:
        with session_scope() as s:
            audit.append(
                s,
                actor=principal.service_account,
                action="decision.deny",
                target=operation.connection,
                data={
                    "rule": verdict.rule,
                    "message": verdict.message,
                    "protocol": operation.protocol,
                    "kind": operation.kind,
                    "operation": operation.text[:2000],
                    "session_id": session_id,
                },
            )

    # -- policy snapshot --------------------------------------------------------------

    async def _fresh(self):
        """The compiled policy for the current store version (checked at most every 0.5 s)."""
        now = time.monotonic()
        fresh = self._snapshot is not None and time.time() < self._snapshot.stale_at
        if fresh and now - self._version_checked < self._version_ttl:
            return self._snapshot
        self._listen()
        async with self._snapshot_lock:
            fresh = self._snapshot is not None and time.time() < self._snapshot.stale_at
            if fresh and time.monotonic() - self._version_checked < self._version_ttl:
                return self._snapshot
            version = await asyncio.to_thread(read_version)
            if not fresh or version != self._snapshot.version:
                self._snapshot = await asyncio.to_thread(load_snapshot)
                self._verdicts.clear()
            self._version = self._snapshot.version
            self._version_checked = time.monotonic()
            return self._snapshot

    def invalidate(self, *_event: str) -> None:
        """Read the version again before the next decision (the bus calls this on a bump)."""
        self._version_checked = 0.0

    def _listen(self) -> None:
        bus = get_bus()
        if bus is not self._bus:  # first use, or the store changed (tests)
            self._bus = bus
            bus.subscribe(VERSION_CHANNEL, self.invalidate)


def _gone(gone: asyncio.Future | None) -> bool:
    return gone is not None and gone.done()


def _why(gone: asyncio.Future) -> str:
    if gone.cancelled() or gone.exception() is not None:
        return "the requester is gone"
    return str(gone.result() or "the requester is gone")


def review_fingerprint(operation: Operation) -> str:
    """What window approvals match on: the adapter's shape, scoped to protocol and kind.
    (Approve-once matches the exact operation instead: `binding_of`.)

    Always a fixed-length hash, so raw operation text never becomes a lookup key.
    """
    shape = operation.fingerprint or operation.text
    raw = "\x1f".join((operation.protocol, operation.kind, shape))
    return hashlib.sha256(raw.encode()).hexdigest()


def _decision_event(operation: Operation, verdict: Verdict) -> dict[str, Any]:
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


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = weakref.WeakKeyDictionary()


def get_gate() -> Gate:
    """One gate per event loop (mitmproxy and the relay each run their own)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = Gate()
    return gate
