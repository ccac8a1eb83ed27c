"""Holding an operation for review: standing approvals, the review, the wait, its outcome.

The gate calls `hold` for a verdict of action "review". Approve-once binds the exact
operation (`binding_of`); a window approval binds its shape (`review_fingerprint`). A
held operation whose runtime left (`gone`) is withdrawn and never runs.

A hold outlives the decision that started it, so the grant is looked at again: every
GRANT_LOOK s while held, and once more (with a fresh store version) when an approval
wakes it. A grant revoked or expired meanwhile refuses the operation with the no-grant
rule, naming the revocation; the approval is left unused and nothing runs.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import replace
from typing import Awaitable, Callable

from app.binding import binding_of
from app.types import Operation, Principal, Verdict

from .store import GateStore

log = logging.getLogger("app.gate")

OnHold = Callable[[int, str], Awaitable[None] | None]
# (look: read the store version first) -> None while the grant stands, else the refusal.
GrantCheck = Callable[[bool], Awaitable[Verdict | None]]
GRANT_LOOK = 0.2  # seconds between looks at the grant of a held operation


def error_verdict(message: str) -> Verdict:
    """airlock itself failed: refuse (HTTP maps status "error" to 503)."""
    return Verdict("deny", rule="airlock-error", message=message, status="error")


def review_fingerprint(operation: Operation) -> str:
    """What window approvals match on: the adapter's shape, scoped to protocol and kind.
    (Approve-once matches the exact operation instead: `binding_of`.)

    Always a fixed-length hash, so raw operation text never becomes a lookup key.
    """
    shape = operation.fingerprint or operation.text
    raw = "\x1f".join((operation.protocol, operation.kind, shape))
    return hashlib.sha256(raw.encode()).hexdigest()


def _gone(gone: asyncio.Future | None) -> bool:
    return gone is not None and gone.done()


def _why(gone: asyncio.Future) -> str:
    if gone.cancelled() or gone.exception() is not None:
        return "the requester is gone"
    return str(gone.result() or "the requester is gone")


async def _watch_grant(grant: GrantCheck, stop: asyncio.Future, refusals: list[Verdict]) -> None:
    """Complete `stop` once the grant is gone, leaving the refusal in `refusals`."""
    while not stop.done():
        await asyncio.sleep(GRANT_LOOK)
        try:
            refusal = await grant(False)
        except Exception:  # noqa: BLE001 - the store is down: the wait itself fails closed
            continue
        if refusal is not None:
            refusals.append(refusal)
            if not stop.done():
                stop.set_result("the grant is gone")
            return


def _stopper(gone: asyncio.Future | None) -> asyncio.Future:
    """A future that completes with `gone` (the runtime left), or earlier (the grant went)."""
    stop = asyncio.get_running_loop().create_future()
    if gone is not None:
        gone.add_done_callback(lambda _: stop.done() or stop.set_result("the requester is gone"))
    return stop


async def _grant_gone(store: GateStore, principal: Principal, review_id: int, url: str,
                      refusal: Verdict) -> Verdict:
    """The grant went while the operation was held: refuse it as the no-grant denial it now
    is. The review it leaves unused is flagged (nobody waits on it any more) and named in
    the message only: adapters show a verdict that carries a review id as that review's
    outcome ("review N was denied"), which would hide the revocation."""
    await asyncio.to_thread(store.requester_gone, review_id, principal.service_account, refusal.message)
    return replace(refusal, action="deny", status="denied", review_id=None, review_url=None,
                   message=f"{refusal.message}; held for review {review_id} ({url}), which was not used: "
                           "nothing ran")


async def hold(store: GateStore, principal: Principal, operation: Operation, verdict: Verdict, *,
               run_id: str | None, session_id: str | None, hold: float | None, on_hold: OnHold | None,
               gone: asyncio.Future | None, grant: GrantCheck | None = None) -> Verdict:
    operation = replace(operation, fingerprint=review_fingerprint(operation), binding=binding_of(operation))
    standing, used_id = await asyncio.to_thread(store.standing_use, principal, operation, verdict.rule, session_id)
    if standing:
        return replace(verdict, action="allow", status="approved", message=standing, review_id=used_id)
    wait = verdict.review.hold_seconds if hold is None else hold
    review_id = await asyncio.to_thread(store.open_review, principal, operation, verdict, run_id, session_id, wait)
    url = store.review_url(review_id)
    if on_hold is not None:
        result = on_hold(review_id, url)
        if asyncio.iscoroutine(result):
            await result
    retry_after = max(1, int(min(wait, 30)))
    stop, refusals = _stopper(gone), []
    watcher = asyncio.get_running_loop().create_task(_watch_grant(grant, stop, refusals)) if grant else None
    try:
        return await _outcome(store, principal, operation, verdict, session_id, review_id, url, wait, gone, grant,
                              stop, refusals, retry_after)
    finally:
        if watcher is not None:
            watcher.cancel()


async def _outcome(store: GateStore, principal: Principal, operation: Operation, verdict: Verdict,
                   session_id: str | None, review_id: int, url: str, wait: float, gone: asyncio.Future | None,
                   grant: GrantCheck | None, stop: asyncio.Future, refusals: list[Verdict],
                   retry_after: int) -> Verdict:
    try:
        status = await store.wait_for_decision(review_id, wait, stop)
        if refusals and not _gone(gone):
            return await _grant_gone(store, principal, review_id, url, refusals[0])
        held = replace(verdict, review_id=review_id, review_url=url, status=status)
        if status == "approved" and grant is not None and not _gone(gone):
            # Approved, perhaps after a revoke this snapshot has not seen yet: look again.
            refusal = await grant(True)
            if refusal is not None:
                return await _grant_gone(store, principal, review_id, url, refusal)
        if status == "approved":
            # The approval belongs to this operation: use it up so it cannot be replayed.
            # If another process used it first, this one has to ask again.
            used, used_id = await asyncio.to_thread(store.standing_use, principal, operation, verdict.rule,
                                                    session_id)
            if used and _gone(gone) and used_id is not None:
                # The runtime left while the approval was being taken: give it back.
                await asyncio.to_thread(store.release_use, used_id, _why(gone))  # type: ignore[arg-type]
            if used and not _gone(gone):
                return replace(held, action="allow", review_id=used_id or review_id)
            status = "withdrawn" if _gone(gone) else "pending"
            held = replace(held, status=status, message=f"review {review_id} was already used")
        if status == "withdrawn":
            reason = _why(gone)  # type: ignore[arg-type]
            await asyncio.to_thread(store.requester_gone, review_id, principal.service_account, reason)
            return replace(held, action="deny", status="withdrawn",
                           message=f"review {review_id}: the operation was withdrawn ({reason}); nothing ran")
        if status == "pending":
            return replace(held, action="review", retry_after=retry_after)
        reason = await asyncio.to_thread(store.review_reason, review_id) if status == "rejected" else ""
    except Exception as exc:
        # The review is stored and stays decidable: refuse (503 / 58000) but hand the
        # runtime its id, so it can retry once the store is back and the review decided.
        log.warning("store failed while review %s was held: %s", review_id, type(exc).__name__)
        return replace(error_verdict(f"the airlock store became unavailable while review {review_id} was held; "
                                     f"retry later: {url}"),
                       review_id=review_id, review_url=url, retry_after=retry_after)
    return replace(held, action="deny", reason=reason,
                   message=f"review {review_id} was {status}" + (f": {reason}" if reason else ""))
