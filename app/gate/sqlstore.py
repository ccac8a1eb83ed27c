"""The gate's store on SQLAlchemy: the one `GateStore` that production uses.

A thin translation to app.approvals, app.audit, app.snapshot and the bus; it decides
nothing (the gate does).
"""
from __future__ import annotations

import asyncio
from typing import Callable

from sqlalchemy import select

from app import approvals, audit, snapshot
from app.bus import get_bus
from app.db import session_scope
from app.identity.keys import principal_for_public_key
from app.models import Review
from app.snapshot import Snapshot
from app.types import Operation, Principal, Verdict
from app.versions import VERSION_CHANNEL


class SqlGateStore:
    def __init__(self) -> None:
        self._bus = None  # the bus version bumps are heard on

    def read_version(self) -> int:
        return snapshot.read_version()

    def load_snapshot(self) -> Snapshot:
        return snapshot.load_snapshot()

    def subscribe_versions(self, callback: Callable[..., None]) -> None:
        # The bus is per store URL (tests switch stores): subscribe once per bus.
        bus = get_bus()
        if self._bus is not bus:
            self._bus = bus
            bus.subscribe(VERSION_CHANNEL, callback)

    def principal_for_public_key(self, public_key: str) -> Principal:
        return principal_for_public_key(public_key)

    def standing_use(self, principal: Principal, operation: Operation, rule: str | None,
                     session_id: str | None) -> tuple[str | None, int | None]:
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

    def open_review(self, principal: Principal, operation: Operation, verdict: Verdict, run_id: str | None,
                    session_id: str | None, hold_seconds: float) -> int:
        with session_scope() as s:
            existing = approvals.find_pending(
                s,
                service_account=principal.service_account,
                connection=operation.connection,
                binding=operation.binding,
                rule=verdict.rule or "",
            )
            if existing is not None:
                approvals.held_again(s, existing, hold_seconds)
                return existing.id
            review = approvals.create_review(
                s, principal=principal, operation=operation, verdict=verdict, run_id=run_id, session_id=session_id,
                hold_seconds=hold_seconds,
            )
            s.flush()
            return review.id

    def review_url(self, review_id: int) -> str:
        return approvals.review_url(review_id)

    async def wait_for_decision(self, review_id: int, timeout: float, gone: asyncio.Future | None) -> str:
        return await approvals.wait_for_decision(review_id, timeout, gone=gone)

    def review_reason(self, review_id: int) -> str:
        with session_scope() as s:
            return s.scalar(select(Review.reason).where(Review.id == review_id)) or ""

    def release_use(self, review_id: int, reason: str) -> None:
        with session_scope() as s:
            approvals.release_use(s, review_id, reason)

    def requester_gone(self, review_id: int, service_account: str, reason: str) -> None:
        with session_scope() as s:
            approvals.requester_gone(s, review_id, service_account, reason)

    def audit(self, actor: str, action: str, target: str, data: dict) -> None:
        with session_scope() as s:
            audit.append(s, actor, action, target, data)
