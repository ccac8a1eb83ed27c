"""Who is calling: Proxy-Authorization (Basic user:token, or Bearer token) -> Principal.

For HTTPS the credential arrives only on the CONNECT, so it is checked there (a bad
one gets 407 and no tunnel) and remembered for the client connection, like mitmproxy's
own proxyauth. A tunnel can stay open for hours, so the credential is checked again
whenever the store version moves (a revoke bumps it, and the gate hears of it as it
commits) and at least once a second while it is used (expiry needs no bump).
Proxy-Authorization never goes upstream.
"""
from __future__ import annotations

import base64
import binascii
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Awaitable

from mitmproxy import connection, http

from app.gate import Unavailable, get_gate
from app.identity import AuthError
from app.types import Principal

from .flowstate import refuse, state, unavailable

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0
CHALLENGE = 'Basic realm="airlock"'


@dataclass(slots=True)
class _Known:
    credential: str
    claimed: str | None
    principal: Principal
    checked: float  # monotonic
    via_connect: bool
    version: int | None  # the store version it was checked under

    def fresh(self) -> bool:
        if time.monotonic() - self.checked >= RECHECK_SECONDS:
            return False
        stamp = get_gate().stamp()
        return stamp is not None and stamp[0] == self.version


def _expired(principal: Principal) -> bool:
    return principal.expires_at is not None and time.time() >= principal.expires_at


def parse_proxy_authorization(value: str | None) -> tuple[str, str | None] | None:
    """(credential, claimed service account) from the header, or None if unusable."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer" and rest:
        return rest, None
    if scheme.lower() == "basic" and rest:
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, secret = decoded.partition(":")
        if sep and secret:
            return secret, user or None
    return None


class ProxyIdentity:
    def __init__(self) -> None:
        self._known: weakref.WeakKeyDictionary[connection.Client, _Known] = weakref.WeakKeyDictionary()

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        header = flow.request.headers.pop("proxy-authorization", None)
        await self._authenticate(flow, header, via_connect=True)

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Not `async def`: most requests ride a tunnel checked less than a second ago, and
        # mitmproxy awaits what a hook returns only when it is awaitable.
        if flow.response or flow.error:
            return None
        header = flow.request.headers.pop("proxy-authorization", None)
        known = self._known.get(flow.client_conn)
        if known is not None and _expired(known.principal):
            # The verified expiry counts even when the IdP or the store cannot be asked.
            self._known.pop(flow.client_conn, None)
            if known.via_connect:  # the tunnel's credential cannot change: it is done
                self._challenge(flow, "token expired")
                return None
            known = None  # plain HTTP: check whatever this request carries afresh
        if known is not None and known.via_connect:
            if known.fresh():
                state(flow).principal = known.principal
                return None
            header = None  # inside a tunnel: the CONNECT's credential is the one that counts
        return self._authenticate(flow, header, via_connect=False, known=known)

    async def _authenticate(self, flow: http.HTTPFlow, header: str | None, *, via_connect: bool,
                            known: _Known | None = None) -> None:
        if known is not None and known.via_connect:
            parsed: tuple[str, str | None] | None = (known.credential, known.claimed)
        else:
            parsed = parse_proxy_authorization(header)
            if parsed is None:
                self._challenge(flow, "proxy credentials are missing or malformed")
                return
            if known is not None and (known.credential, known.claimed) == parsed and known.fresh():
                state(flow).principal = known.principal
                return
        credential, claimed = parsed
        gate = get_gate()
        try:
            principal = await gate.authenticate(credential, claimed=claimed, protocol="http",
                                                  client=_peer(flow))
        # Cannot check now: refuse this request, but keep the tunnel's credential so the
        # next request is checked again rather than told it has no credentials.
        except Unavailable as exc:
            unavailable(flow, str(exc))
            return
        except AuthError as exc:
            self._known.pop(flow.client_conn, None)  # refused: this tunnel is done
            self._challenge(flow, exc.reason)
            return
        except Exception:
            log.exception("proxy authentication failed unexpectedly")
            unavailable(flow, "airlock could not verify credentials")
            return
        via = via_connect or (known is not None and known.via_connect)
        self._known[flow.client_conn] = _Known(credential, claimed, principal, time.monotonic(), via, gate.version)
        state(flow).principal = principal

    @staticmethod
    def _challenge(flow: http.HTTPFlow, reason: str) -> None:
        refuse(flow, 407, {"error": "proxy_authentication_required", "message": reason},
               {"Proxy-Authenticate": CHALLENGE})


def _peer(flow: http.HTTPFlow) -> str:
    addr = flow.client_conn.peername
    return f"{addr[0]}:{addr[1]}" if addr else ""
