"""What a relay session asks the gate, whatever its protocol.

`Checker` decides one operation at a time for one session (`RelaySession`): it
re-checks the session's token when due, watches the client while the gate holds an
operation (a client that leaves, or cancels, withdraws it: nothing reaches the target
and the approval stays unused), tells the protocol at once that the operation is held,
and keeps the union of the masks seen so far. The protocol says how a hold is shown
(`on_hold`) and turns refusals into its own errors.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Callable

from app.masking.cursors import mask_names, union
from app.types import MaskSpec, Operation, Verdict

from .session import RelaySession

__all__ = ["Checker", "mask_names", "union"]  # the mask union is pure: app.masking.cursors

DISCONNECTED = "the client disconnected"
CANCELLED = "the client cancelled the statement"


class Checker:
    def __init__(self, session: RelaySession, on_hold: Callable[[int, str], None] | None = None) -> None:
        self.session = session
        self._on_hold_shown = on_hold  # tell the client its operation waits for a review
        self.statements = 0
        self._holding = False
        self._gone: asyncio.Future | None = None  # completes when the client leaves a hold

    async def decide(self, op: Operation, *, hold: float | None = None, defer_review: bool = False) -> Verdict:
        s = self.session
        if s.token_due():
            await s.check_token()
        self.statements += 1
        self._gone = gone = asyncio.get_running_loop().create_future()
        s.watch_client(self._client_lost)
        if s.reason and not op.reason:
            op = replace(op, reason=s.reason)
        try:
            verdict = await s.gate.decide(s.principal, op, recording=s.rec, run_id=s.run_id, hold=hold,
                                          on_hold=self._on_hold, record_allows=False, gone=gone,
                                          defer_review=defer_review)
            if verdict.action == "allow":
                s.grant_seen = True  # allowed, so granted: a later revoke or expiry ends the session
            return verdict
        finally:
            self._holding = False
            self._gone = None

    async def give_back_if_gone(self, verdict: Verdict) -> Verdict | None:
        """An approved operation whose client left before it could be sent: the approval
        goes back unused, and the operation is withdrawn."""
        if verdict.status == "approved" and self.session.client_gone():
            await self.session.gate.give_back(verdict, DISCONNECTED)
            return replace(verdict, action="deny", status="withdrawn")
        return None

    def _on_hold(self, review_id: int, url: str) -> None:
        self._holding = True
        if self.session.client_gone():
            self._client_lost(None)
        if self._on_hold_shown is not None:
            self._on_hold_shown(review_id, url)
        self.session.record("notice", {"review_id": review_id, "review_url": url})

    def _client_lost(self, exc) -> None:
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(DISCONNECTED)

    def cancel(self) -> bool:
        """The client asked to cancel: True if it ended a hold (otherwise the target gets it)."""
        gone = self._gone
        if self._holding and gone is not None and not gone.done():
            gone.set_result(CANCELLED)
            return True
        return False

    def masker(self, masks: tuple[MaskSpec, ...]):
        if not masks:
            return None
        masker = self.session.gate.masker(masks)
        return masker if masker.active else None

