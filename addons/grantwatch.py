"""Ends open client connections (keep-alive tunnels) whose grant is gone.

Every request is decided by the gate, so a revoked grant already refuses the next one;
this closes the connection itself within a second of the revocation (or expiry), as
the PostgreSQL relay ends its sessions, instead of leaving an idle tunnel open.

A revoke must never turn a refusal into a bare disconnect: a runtime cannot tell a cut
connection from a network fault, and retries blindly. So a connection is closed:
- at once when nothing on it waits for an answer from airlock (idle, or only allowed
  responses in progress: those are cut, the revoke promise is "within a second");
- when a request on it is still undecided (its body arriving, the gate deciding, or
  held for approval), only once its refusal has been delivered. The gate refuses it
  itself: a hold looks at its grant while it waits (app/gate/holds.py), and a request
  decided now meets the snapshot without the grant. An HTTP/1 refusal carries
  `Connection: close`, so mitmproxy closes right after sending it;
- in any case by REVOKED_GRACE s after the revoke was seen, even if an answer is stuck.

This addon must come first in the addon list: its `requestheaders` hook has to see a
request before the gatekeeper starts deciding it (mitmproxy runs an event's hooks addon
by addon, awaiting each).
"""
from __future__ import annotations

import asyncio
import logging
import weakref

from mitmproxy import connection, ctx, http

from app.gate import get_gate
from app.policy.engine import NO_GRANT
from app.types import Principal

from .flowstate import state

log = logging.getLogger(__name__)
GRANT_WATCH = 0.5  # seconds between looks
REVOKED_GRACE = 1.0  # at most this long after the revoke is seen, a connection with an undecided request closes
ANSWER_LOOK = 0.05  # seconds between looks at whether the refusals of a revoked connection went out


def waits_for_answer(flow: http.HTTPFlow) -> bool:
    """The request has no answer from airlock on its way yet: it is undecided, or refused
    and the refusal is not sent. An allowed one is the upstream's to answer."""
    return flow.live and flow.error is None and not state(flow).allowed


def revocation(flow: http.HTTPFlow) -> bool:
    """The gate refused this request because its grant is gone."""
    verdict = state(flow).verdict
    return state(flow).refused and verdict is not None and verdict.rule == NO_GRANT


class GrantWatch:
    def __init__(self) -> None:
        # A client connection -> the grant its allowed requests ran under.
        self._live: weakref.WeakKeyDictionary[connection.Client, tuple[Principal, str]] = weakref.WeakKeyDictionary()
        # A client connection -> its requests seen, so a revoke can wait for their answers.
        self._flows: weakref.WeakKeyDictionary[connection.Client, weakref.WeakSet[http.HTTPFlow]] = (
            weakref.WeakKeyDictionary())
        self._closing: dict[str, asyncio.Task] = {}  # client id -> the task that closes it
        self._task: asyncio.Task | None = None

    def running(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def done(self) -> None:
        for task in [self._task, *self._closing.values()]:
            if task is not None:
                task.cancel()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._flows.setdefault(flow.client_conn, weakref.WeakSet()).add(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        client = flow.client_conn
        if st.allowed and st.principal is not None and st.target is not None:
            self._live[client] = (st.principal, st.target.name)
        elif revocation(flow) and st.principal is not None and st.target is not None and (
                self._live.get(client, (None, ""))[1] == st.target.name or st.held):
            # The gate says the grant this connection ran (or was held) under is gone: no
            # need to wait for the next look. (A refusal for another connection's host, on
            # a plain proxy connection, says nothing about this one's grant.)
            self._revoked(client, st.principal, st.target.name)
        if client.id in self._closing and flow.request.http_version.startswith("HTTP/1") and flow.response:
            flow.response.headers["Connection"] = "close"  # mitmproxy closes once it is sent

    def client_disconnected(self, client: connection.Client) -> None:
        self._live.pop(client, None)
        self._flows.pop(client, None)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(GRANT_WATCH)
            if not self._live:
                continue
            gate, granted = get_gate(), {}
            for client, (principal, name) in list(self._live.items()):
                if principal.service_account not in granted:
                    try:
                        targets = await gate.connections_for(principal, "http")
                    except Exception:  # store unavailable: the gate refuses every request meanwhile
                        continue
                    granted[principal.service_account] = {t.name for t in targets}
                if name not in granted[principal.service_account]:
                    self._revoked(client, principal, name)

    def _revoked(self, client: connection.Client, principal: Principal, name: str) -> None:
        self._live.pop(client, None)
        if client.id in self._closing:
            return
        waiting = self._waiting(client)
        if not waiting:
            self._close(client, principal, name)
            return
        # A warning, as the proxy logs them (termlog "warn"): a revoke that meets work in
        # progress is what an operator asks about afterwards ("why was my request refused?").
        log.warning("the grant of %s on %s is gone: %s closes once %d pending request(s) are refused "
                    "(at most %.1f s)", principal.service_account, name, client.peername, waiting, REVOKED_GRACE)
        self._closing[client.id] = asyncio.get_running_loop().create_task(
            self._close_when_answered(client, principal, name))

    def _waiting(self, client: connection.Client) -> int:
        return sum(1 for flow in list(self._flows.get(client, ())) if waits_for_answer(flow))

    async def _close_when_answered(self, client: connection.Client, principal: Principal, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REVOKED_GRACE
        try:
            while self._waiting(client) and loop.time() < deadline:
                await asyncio.sleep(ANSWER_LOOK)
            if self._waiting(client):
                log.warning("%s: a request was still undecided %.1f s after its grant went; closing anyway",
                            client.peername, REVOKED_GRACE)
            self._close(client, principal, name)
        finally:
            self._closing.pop(client.id, None)

    def _close(self, client: connection.Client, principal: Principal, name: str) -> None:
        self._live.pop(client, None)
        server = ctx.master.addons.get("proxyserver")
        handler = getattr(server, "connections", {}).get(client.id) if server is not None else None
        if handler is None:
            return
        log.info("closing %s: the grant of %s on %s is gone", client.peername, principal.service_account, name)
        handler.close_connection(handler.client)
