"""What the gate needs from the world: the store interface it is built with.

The gate decides; everything it reads or writes outside itself goes through a
`GateStore`. The default is the SQLAlchemy store (`app.gate.sqlstore`); unit tests
build the gate with in-memory fakes and run its decisions with no database.

Every method but `wait_for_decision` blocks (store I/O): the gate calls them in a
thread. Any exception they raise is a store failure, and the gate fails closed.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Protocol

from app.snapshot import Snapshot
from app.types import Operation, Principal, Verdict


class Recording(Protocol):
    """A session's recording, as the gate writes to it: its id and decision events."""

    id: str

    def event(self, kind: str, data: Any) -> None: ...


class GateStore(Protocol):
    # -- the policy snapshot ----------------------------------------------------------
    def read_version(self) -> int:
        """The store's policy version now (cheap; read at most every VERSION_TTL)."""

    def load_snapshot(self) -> Snapshot:
        """Policy, grants and targets compiled at the current version."""

    def subscribe_versions(self, callback: Callable[..., None]) -> None:
        """Call `callback` when the version moves (a hint: the gate then re-reads it).
        Called before every version read; subscribing the same callback again is a no-op."""

    def principal_for_public_key(self, public_key: str) -> Principal:
        """The service account that registered this key, or AuthError."""

    # -- reviews --------------------------------------------------------------------
    def standing_use(self, principal: Principal, operation: Operation, rule: str | None,
                     session_id: str | None) -> tuple[str | None, int | None]:
        """(why the operation may pass without a new review, the approve-once review it
        used up), or (None, None). Using an approve-once review is atomic."""

    def open_review(self, principal: Principal, operation: Operation, verdict: Verdict, run_id: str | None,
                    session_id: str | None, hold_seconds: float) -> int:
        """The id of the pending review of exactly this operation: an open one, or a new one."""

    def review_url(self, review_id: int) -> str: ...

    async def wait_for_decision(self, review_id: int, timeout: float, gone: asyncio.Future | None) -> str:
        """approved, rejected, expired or pending after `timeout` s; withdrawn once `gone` completes."""

    def review_reason(self, review_id: int) -> str:
        """The reason the approvers gave for their decision."""

    def release_use(self, review_id: int, reason: str) -> None:
        """Give an approve-once use back: its operation was never sent."""

    def requester_gone(self, review_id: int, service_account: str, reason: str) -> None:
        """Flag a held review whose requester left (nothing ran)."""

    # -- audit ------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str, data: dict) -> None:
        """Append one entry to the audit chain."""
