"""The relay core's re-checks with a fake gate, no store: a session's token
(TokenCheck) and its grant (GrantWatcher), as every protocol uses them."""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from app.gate import Unavailable
from app.identity import AuthError
from app.relay import session as core
from app.relay.session import GrantWatcher, TokenCheck
from app.types import Principal


class FakeGate:
    def __init__(self) -> None:
        self.version = 7
        self.stamps: tuple[int, int] | None = (7, 0)
        self.answer: Exception | None = None
        self.delay = 0.0
        self.asked = 0
        self.granted: dict[str, set[str]] = {}

    def stamp(self):
        return self.stamps

    async def authenticate(self, token, claimed=None):
        self.asked += 1
        await asyncio.sleep(self.delay)
        if self.answer is not None:
            raise self.answer

    async def connections_for(self, principal, protocol):
        if isinstance(self.granted, Exception):
            raise self.granted
        return [SimpleNamespace(name=n) for n in self.granted.get(principal.service_account, ())]


def check(gate: FakeGate, expires_in: float | None = 60) -> TokenCheck:
    expires = None if expires_in is None else time.time() + expires_in
    return TokenCheck(gate, "tok", "bot", Principal("bot", expires_at=expires))


def test_a_token_is_due_after_a_second_or_when_the_store_version_moves(monkeypatch):
    gate = FakeGate()
    token = check(gate)
    assert not token.due() and token.fresh()
    gate.stamps = (8, 0)
    assert token.due()
    gate.stamps = None  # the gate must look at the store first
    assert token.due()
    gate.stamps = (7, 0)
    monkeypatch.setattr(core.time, "monotonic", lambda: token.checked + core.TOKEN_RECHECK)
    assert token.due() and not token.fresh()


def test_refusals_name_the_reason_and_a_down_store_is_none():
    gate = FakeGate()
    assert asyncio.run(check(gate).refusal()) is None and gate.asked == 1
    gate.answer = AuthError("token revoked")
    assert asyncio.run(check(gate).refusal()) == "token revoked"
    gate.answer = Unavailable("store down")
    assert asyncio.run(check(gate).refusal()) is None


def test_an_expired_token_is_refused_without_asking_anyone():
    gate = FakeGate()
    assert asyncio.run(check(gate, expires_in=-1).refusal()) == "token expired" and gate.asked == 0


def test_a_token_that_expires_while_a_down_idp_answers_is_refused():
    gate = FakeGate()
    gate.answer, gate.delay = Unavailable("idp down"), 0.3
    assert asyncio.run(check(gate, expires_in=0.1).refusal()) == "token expired"


def test_the_version_moves_only_with_a_successful_check():
    gate = FakeGate()
    token = check(gate)
    gate.version, gate.answer = 9, Unavailable("store down")
    asyncio.run(token.refusal())
    assert token.version == 7
    gate.answer = None
    asyncio.run(token.refusal())
    assert token.version == 9


class Holder:
    def __init__(self, gate: FakeGate, account: str, connection: str, seen: bool) -> None:
        self.gate, self.principal, self.connection_name, self.grant_seen = gate, Principal(account), connection, seen
        self.gone = 0

    def grant_gone(self) -> None:
        self.gone += 1


def test_the_grant_watcher_ends_only_sessions_whose_grant_was_seen_live():
    gate = FakeGate()
    gate.granted = {"bot": {"db"}}
    live, fresh, lost = Holder(gate, "bot", "db", False), Holder(gate, "bot", "other", False), \
        Holder(gate, "bot", "old", True)
    watcher = GrantWatcher("postgres", lambda: [live, fresh, lost])
    asyncio.run(watcher.look())
    assert (live.grant_seen, live.gone) == (True, 0)
    assert (fresh.grant_seen, fresh.gone) == (False, 0)  # never seen live: its snapshot may be older
    assert lost.gone == 1
    gate.granted = {}
    asyncio.run(watcher.look())
    assert live.gone == 1


def test_the_grant_watcher_ends_nothing_while_the_store_is_down():
    gate = FakeGate()
    gate.granted = RuntimeError("store down")
    holder = Holder(gate, "bot", "db", True)
    asyncio.run(GrantWatcher("mysql", lambda: [holder]).look())
    assert holder.gone == 0
