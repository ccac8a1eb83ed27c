"""Holding an operation for review: standing approvals, the review, the wait, its outcome.

The gate calls `hold` for a verdict of action "review". Approve-once binds the exact
operation (`binding_of`); a window approval binds its shape (`review_fingerprint`). A
held operation whose runtime left (`gone`) is withdrawn and never runs.
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


async def hold(store: GateStore, principal: Principal, operation: Operation, verdict: Verdict, *,
               run_id: str | None, session_id: str | None, hold: float | None, on_hold: OnHold | None,
               gone: asyncio.Future | None) -> Verdict:
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
    try:
        status = await store.wait_for_decision(review_id, wait, gone)
        held = replace(verdict, review_id=review_id, review_url=url, status=status)
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
