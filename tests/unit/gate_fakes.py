"""In-memory stand-ins for what the gate is built with (app.gate.store.GateStore), so the
gate's decisions are tested with no database. `no_store` points the store settings at a
server that does not exist and makes any store access fail the test."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import pytest

from app.gate import Gate
from app.identity import AuthError
from app.policy import GrantSpec, Rule, ServiceAccountSpec, compile_policy
from app.snapshot import Snapshot, Target
from app.types import Operation, Principal, Verdict

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"


@pytest.fixture
def no_store(monkeypatch):
    """Any touch of the real store fails loudly (and would make the gate fail closed)."""
    from app import db
    from app.config import settings

    monkeypatch.setenv("AIRLOCK_DATABASE_URL", UNREACHABLE)
    settings.cache_clear()
    db.reset_engines()
    touched: list[str] = []

    def refuse(*_a, **_k):
        touched.append("store")
        raise AssertionError("a gate unit test reached the database")

    monkeypatch.setattr(db, "engine_for", refuse)
    yield touched
    assert not touched, "the gate touched the store"
    settings.cache_clear()
    db.reset_engines()


def rule(name: str, action: str = "deny", **match) -> Rule:
    extra = match.pop("extra", {})
    return Rule.from_dict({"name": name, "match": match, "action": action, **extra})


@dataclass
class FakeReview:
    id: int
    principal: Principal
    operation: Operation
    rule: str
    status: str = "pending"
    reason: str = ""
    used: bool = False
    gone: str = ""
    decided: asyncio.Event = field(default_factory=asyncio.Event)


class FakeStore:
    """A GateStore held in memory: one policy version, reviews decided by the test."""

    def __init__(self, rules: list[Rule], grants: list[tuple[str, str]], *, accounts: tuple[str, ...] = (),
                 targets: dict[str, Target] | None = None):
        self.version = 1
        self.rules, self.grants = rules, grants
        self.accounts = accounts
        self.targets = targets or {}
        self.reviews: dict[int, FakeReview] = {}
        self.windows: list[tuple[str, str, str, str]] = []  # service account, connection, fingerprint, rule
        self.audits: list[tuple[str, str, str, dict]] = []
        self.snapshots_loaded = 0
        self.version_reads = 0
        self.on_version: Callable[..., None] | None = None
        self.fail: Exception | None = None  # every store call raises it while set
        self.revoked: dict[tuple[str, str], datetime] = {}

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def bump(self, rules: list[Rule] | None = None) -> None:
        if rules is not None:
            self.rules = rules
        self.version += 1
        if self.on_version is not None:
            self.on_version("policy")

    def revoke(self, service_account: str, connection: str, *, tell: bool = True) -> None:
        """Revoke a grant as the store does (a version bump); `tell=False`: no bus hint, so
        the gate sees it only when it next reads the version."""
        self.grants = [g for g in self.grants if g != (service_account, connection)]
        self.revoked[(service_account, connection)] = datetime.now(timezone.utc)
        self.version += 1
        if tell and self.on_version is not None:
            self.on_version("policy")

    # -- the policy snapshot ----------------------------------------------------------
    def read_version(self) -> int:
        self._check()
        self.version_reads += 1
        return self.version

    def load_snapshot(self) -> Snapshot:
        self._check()
        self.snapshots_loaded += 1
        specs = [GrantSpec(sa, conn) for sa, conn in self.grants]
        accounts = [ServiceAccountSpec(name=a) for a in self.accounts]
        by_account: dict[str, dict[str, datetime | None]] = {}
        for g in specs:
            by_account.setdefault(g.service_account, {})[g.connection] = None
        return Snapshot(self.version, compile_policy(self.rules, specs, accounts, version=self.version),
                        dict(self.targets), by_account, revoked=dict(self.revoked))

    def subscribe_versions(self, callback) -> None:
        self.on_version = callback

    def principal_for_public_key(self, public_key: str) -> Principal:
        self._check()
        raise AuthError("unknown key")

    # -- reviews --------------------------------------------------------------------
    def standing_use(self, principal, operation, rule, session_id):
        self._check()
        key = (principal.service_account, operation.connection, operation.fingerprint, rule or "")
        if key in self.windows:
            return "shape approved in a window", None
        for r in self.reviews.values():
            if (r.status == "approved" and not r.used and r.rule == (rule or "")
                    and r.operation.binding == operation.binding and r.principal == principal):
                r.used = True
                return f"approved once in review {r.id}", r.id
        return None, None

    def open_review(self, principal, operation, verdict: Verdict, run_id, session_id, hold_seconds) -> int:
        self._check()
        for r in self.reviews.values():
            if r.status == "pending" and r.operation.binding == operation.binding and r.rule == (verdict.rule or ""):
                return r.id
        review = FakeReview(len(self.reviews) + 1, principal, operation, verdict.rule or "")
        self.reviews[review.id] = review
        return review.id

    def review_url(self, review_id: int) -> str:
        return f"http://portal.test/reviews/{review_id}"

    async def wait_for_decision(self, review_id, timeout, gone) -> str:
        review = self.reviews[review_id]
        waits = [asyncio.ensure_future(review.decided.wait())]
        if gone is not None:
            waits.append(gone)
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waits[0].cancel()
        self._check()
        if gone is not None and gone.done():
            return "withdrawn"
        return review.status

    def decide(self, review_id: int, status: str, reason: str = "") -> None:
        review = self.reviews[review_id]
        review.status, review.reason = status, reason
        review.decided.set()

    def review_reason(self, review_id: int) -> str:
        self._check()
        return self.reviews[review_id].reason

    def release_use(self, review_id: int, reason: str) -> None:
        self._check()
        self.reviews[review_id].used = False

    def requester_gone(self, review_id: int, service_account: str, reason: str) -> None:
        self._check()
        self.reviews[review_id].gone = reason

    # -- audit ------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str, data: dict) -> None:
        self._check()
        self.audits.append((actor, action, target, data))


class FakeAuthenticator:
    def __init__(self, tokens: dict[str, Principal]):
        self.tokens = tokens

    async def authenticate_async(self, credential: str, claimed: str | None = None) -> Principal:
        principal = self.tokens.get(credential)
        if principal is None:
            raise AuthError("unknown token")
        if claimed is not None and claimed != principal.service_account:
            raise AuthError("user name does not match the credential")
        return principal


class FakeRecording:
    def __init__(self, id: str = "s-1"):
        self.id = id
        self.events: list[tuple[str, dict]] = []

    def event(self, kind: str, data) -> None:
        self.events.append((kind, data))


def build(store: FakeStore, tokens: dict[str, Principal] | None = None, **kw) -> Gate:
    return Gate(store=store, authenticator=FakeAuthenticator(tokens or {}), mask_salt=b"salt", **kw)
