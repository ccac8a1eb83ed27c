"""Ends open client connections (keep-alive tunnels) whose grant is gone.

Every request is decided by the gate, so a revoked grant already refuses the next one;
this closes the connection itself within a second of the revocation (or expiry), as
the PostgreSQL relay ends its sessions, instead of leaving an idle tunnel open.
"""
from __future__ import annotations

import asyncio
import logging
import weakref

from mitmproxy import connection, ctx, http

from app.gate import get_gate
from app.types import Principal

from .flowstate import state

log = logging.getLogger(__name__)
GRANT_WATCH = 0.5  # seconds between looks


class GrantWatch:
    def __init__(self) -> None:
        # A client connection -> the grant its allowed requests ran under.
        self._live: weakref.WeakKeyDictionary[connection.Client, tuple[Principal, str]] = weakref.WeakKeyDictionary()
        self._task: asyncio.Task | None = None

    def running(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def response(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if st.allowed and st.principal is not None and st.target is not None:
            self._live[flow.client_conn] = (st.principal, st.target.name)

    def client_disconnected(self, client: connection.Client) -> None:
        self._live.pop(client, None)

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
                    self._close(client, principal, name)

    def _close(self, client: connection.Client, principal: Principal, name: str) -> None:
        self._live.pop(client, None)
        server = ctx.master.addons.get("proxyserver")
        handler = getattr(server, "connections", {}).get(client.id) if server is not None else None
        if handler is None:
            return
        log.info("closing %s: the grant of %s on %s is gone", client.peername, principal.service_account, name)
        handler.close_connection(handler.client)
