"""Socket Mode: interactions over a WebSocket that airlock opens, for hosts without a public URL.

The same `actions` handler as `/slack/actions`: the envelope is acknowledged with the
handler's immediate answer, and its work runs afterwards. No request signature here:
Slack authenticates the socket with the app-level token (`xapp-...`, connections:write).
"""
from __future__ import annotations

import logging
import threading

from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from app.config import settings
from app.slack import actions
from app.slack import client as slack

log = logging.getLogger(__name__)


def on_request(client: SocketModeClient, req: SocketModeRequest) -> None:
    payload = req.payload if isinstance(req.payload, dict) else {}
    if req.type == "interactive":
        ack = actions.handle_interaction(payload)
    elif req.type == "slash_commands":
        ack = actions.handle_command({k: str(v) for k, v in payload.items()})
    else:
        ack = actions.Ack()  # events_api and others: not used by airlock, but must be acknowledged
    client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload=ack.body))
    actions.dispatch(ack)


def start(app_token: str | None = None) -> SocketModeClient | None:
    """Connect and serve until `close()`; None when no app token is configured."""
    token = app_token or settings().slack_app_token
    if not token:
        return None
    client = SocketModeClient(app_token=token, web_client=slack.web_client(), auto_reconnect_enabled=True)
    client.socket_mode_request_listeners.append(on_request)
    client.connect()
    log.info("slack Socket Mode connected")
    return client


class Runner:
    """Keeps trying to connect until it has (slack-sdk reconnects by itself after that)."""

    def __init__(self, app_token: str | None = None) -> None:
        self.app_token = app_token
        self.client: SocketModeClient | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Runner:
        self._thread = threading.Thread(target=self._run, name="airlock-slack-socket", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                client = start(self.app_token)
            except Exception as exc:  # Slack down, or a bad app token: keep the rest of airlock going
                log.warning("slack Socket Mode could not connect (%s); retrying in %.0fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            if client is not None and self._stop.is_set():
                client.close()
                return
            self.client = client
            return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.client is not None:
            self.client.close()
