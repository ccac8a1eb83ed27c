"""What every relay session is, whatever its protocol: who is on it, which connection
it uses, whether its credential still counts, its run and its recording.

`TokenCheck` and `GrantWatcher` are the two re-checks every protocol shares (the
PostgreSQL and MySQL sessions, the SSH connection): a token that stops counting ends
the session at its next statement, a grant that goes ends it within a second even
when idle. `RelaySession` puts identity, run id and recording hooks together for a
protocol adapter built on the core (app/relay/postgres/, tests/integration/
test_relay_core_echo.py); the checker (app/relay/checker.py) reads it through exactly
the attributes and methods named here.
"""
from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from typing import Callable, Iterable, Protocol

from app.gate import Gate, Unavailable, get_gate
from app.identity import AuthError
from app.recording import recorder
from app.recording_store import compact_json
from app.types import Principal

log = logging.getLogger(__name__)

# A token is checked again when the store version moves (a revoke bumps it, and the gate
# hears of it at once), and at least this often otherwise (expiry needs no bump).
TOKEN_RECHECK = 1.0
GRANT_WATCH = 0.5  # seconds between looks: a revoked or expired grant ends its sessions within a second

_json = compact_json  # one event a statement: the C encoder, built once


class SessionEnd(Exception):
    """The session is over; the client has been told why."""


class TokenCheck:
    """The credential a session logged in with, authenticated again while it lasts."""

    def __init__(self, gate: Gate, token: str, claimed: str | None, principal: Principal) -> None:
        self.gate, self.token, self.claimed, self.principal = gate, token, claimed, principal
        self.checked = time.monotonic()
        self.version: int | None = gate.version  # the store version it was last checked under

    def expired(self) -> bool:
        """From the claims verified at login: needs neither the IdP nor the store."""
        expires = self.principal.expires_at
        return expires is not None and time.time() >= expires

    def due(self) -> bool:
        """Whether to check it again before the next decision (no I/O)."""
        if time.monotonic() - self.checked >= TOKEN_RECHECK:
            return True
        stamp = self.gate.stamp()
        return stamp is None or stamp[0] != self.version

    def fresh(self) -> bool:
        """Checked within the last second: a verdict remembered since may be reused."""
        return time.monotonic() - self.checked < TOKEN_RECHECK

    async def refusal(self) -> str | None:
        """Check it now: why it no longer counts, or None while it does. A store or IdP
        that is down is no reason: the gate refuses every statement meanwhile, and the
        expiry is enforced without either."""
        if self.expired():
            return "token expired"
        self.checked = time.monotonic()
        try:
            await self.gate.authenticate(self.token, claimed=self.claimed)
        except AuthError as exc:
            return exc.reason
        except Unavailable:
            pass
        else:
            self.version = self.gate.version
        # An IdP that is down may take its time to say so: the token may have expired meanwhile.
        return "token expired" if self.expired() else None


class GrantHolder(Protocol):
    """What the grant watcher reads of a session (or an SSH connection)."""

    gate: Gate
    principal: Principal | None
    connection_name: str
    grant_seen: bool

    def grant_gone(self) -> None: ...


class GrantWatcher:
    """Ends sessions whose grant is gone (revoked, expired, account disabled). Their next
    statement would be refused anyway; an idle session must not linger on either."""

    def __init__(self, protocol: str, sessions: Callable[[], Iterable[GrantHolder]]) -> None:
        self.protocol, self.sessions = protocol, sessions

    async def run(self) -> None:
        while True:
            await asyncio.sleep(GRANT_WATCH)
            await self.look()

    async def look(self) -> None:
        live: dict[str, set[str]] = {}
        for session in list(self.sessions()):
            principal = session.principal
            if principal is None:
                continue
            if principal.service_account not in live:
                try:
                    targets = await session.gate.connections_for(principal, self.protocol)
                except Exception:  # noqa: BLE001 - store unavailable: the gate refuses every statement meanwhile
                    continue
                live[principal.service_account] = {t.name for t in targets}
            if session.connection_name in live[principal.service_account]:
                session.grant_seen = True
            elif session.grant_seen:
                # Only a grant seen live is "gone": a session that logged in just after a grant
                # was added may meet a snapshot older than it (its statements wait for it).
                session.grant_gone()


class RelaySession(ABC):
    """Identity, token re-check, run id and recording of one session. A protocol fills in
    how it tells its client that the session ends (`refuse_token`, `grant_gone`) and how
    the checker watches its client during a hold (`client_gone`, `watch_client`)."""

    protocol = ""

    def __init__(self, client_addr: str) -> None:
        self.client_addr = client_addr
        self.gate: Gate = get_gate()
        self.principal: Principal | None = None
        self.token: TokenCheck | None = None
        self.connection_name = ""
        self.user = ""
        self.run_id: str | None = None
        self.reason = ""  # the agent's justification, shown to reviewers, never decided on
        self.rec = None
        self.grant_seen = False

    async def authenticate(self, token: str, claimed: str | None) -> Principal:
        """Log in with the token (AuthError, Unavailable as the gate raises them)."""
        self.principal = await self.gate.authenticate(token, claimed=claimed, protocol=self.protocol,
                                                      client=self.client_addr)
        self.token = TokenCheck(self.gate, token, claimed, self.principal)
        return self.principal

    async def granted(self) -> bool:
        """Whether the principal holds a grant on the session's connection now."""
        targets = await self.gate.connections_for(self.principal, self.protocol)
        self.grant_seen = any(t.name == self.connection_name for t in targets)
        return self.grant_seen

    def token_due(self) -> bool:
        return self.token is None or self.token.due()

    async def check_token(self) -> None:
        """Authenticate the token again; raise SessionEnd, the client told, if it no longer counts."""
        if self.token is None:
            raise SessionEnd()
        expired = self.token.expired()
        reason = await self.token.refusal()
        if reason is not None:
            self.refuse_token(reason, expired=expired)
            raise SessionEnd()

    def open_recording(self, meta: dict) -> None:
        self.rec = recorder().open(protocol=self.protocol, connection=self.connection_name,
                                   service_account=self.principal.service_account, client_addr=self.client_addr,
                                   run_id=self.run_id, meta=meta)

    def record(self, kind: str, data: dict) -> None:
        if self.rec is not None:
            self.rec.event(kind, _json(data))

    def tag_run(self, run_id: str) -> None:
        if run_id and run_id != self.run_id:
            self.run_id = run_id
            if self.rec is not None:
                self.rec.tag_run(run_id)

    # -- what each protocol says in its own words ------------------------------------

    @abstractmethod
    def refuse_token(self, reason: str, *, expired: bool) -> None:
        ...

    @abstractmethod
    def grant_gone(self) -> None:
        ...

    @abstractmethod
    def client_gone(self) -> bool:
        ...

    @abstractmethod
    def watch_client(self, on_lost: Callable[[object], None]) -> None:
        """Call `on_lost` once the client has left (the checker withdraws a hold)."""
        ...

    @abstractmethod
    def shutdown(self) -> None:
        ...
