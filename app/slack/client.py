"""The Slack Web API client, and what a failed call means for a retry.

Retries belong to the outbox, not to the client: the client makes one attempt with a
timeout, and `classify` turns whatever went wrong into "retry after N s" or "give up".
"""
from __future__ import annotations

import logging
import socket
import urllib.error
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from app.config import settings

log = logging.getLogger(__name__)

# One attempt may take this long; the outbox lease must outlast it.
CALL_TIMEOUT = 10.0
DEFAULT_RETRY_AFTER = 30.0
# Slack says these are on its side and worth another try; any other `ok: false` error
# (channel_not_found, invalid_auth, ...) will not fix itself by waiting.
TRANSIENT_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
    "team_added_to_org",
})
RESPONSE_URL_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")


def configured() -> bool:
    """Slack is on when a bot token is set; without one, nothing is posted or queued."""
    return bool(settings().slack_bot_token)


def api_base_url() -> str:
    base = settings().slack_api_url or WebClient.BASE_URL
    return base if base.endswith("/") else base + "/"


@lru_cache(maxsize=4)
def _client(token: str | None, base_url: str, timeout: float) -> WebClient:
    # retry_handlers=[]: the SDK's own retries would sleep inside a request thread.
    return WebClient(token=token, base_url=base_url, timeout=int(max(1, timeout)), retry_handlers=[])


def web_client() -> WebClient:
    return _client(settings().slack_bot_token, api_base_url(), CALL_TIMEOUT)


@dataclass(frozen=True)
class Failure:
    """Why a delivery failed, and whether waiting could help."""

    error: str
    transient: bool
    retry_after: float | None = None  # Slack's own Retry-After, in seconds

    def __str__(self) -> str:
        return self.error


class DeliveryError(Exception):
    """Raised by deliverers for outcomes that are not exceptions of the SDK."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    for name in ("Retry-After", "retry-after"):
        raw = headers.get(name) if hasattr(headers, "get") else None
        if raw is not None:
            if isinstance(raw, list):
                raw = raw[0] if raw else None
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return DEFAULT_RETRY_AFTER
    return None


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, DeliveryError):
        return exc.failure
    if isinstance(exc, SlackApiError):
        resp = exc.response
        status = getattr(resp, "status_code", 0) or 0
        data = getattr(resp, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        error = str(error or f"HTTP {status}")
        if status == 429 or error in ("ratelimited", "rate_limited"):
            wait = _retry_after(getattr(resp, "headers", None))
            return Failure(f"rate limited ({error})", True, DEFAULT_RETRY_AFTER if wait is None else wait)
        if status >= 500 or error in TRANSIENT_ERRORS:
            return Failure(f"Slack error: {error} (HTTP {status})", True)
        return Failure(f"Slack refused the call: {error}", False)
    if isinstance(exc, (SlackRequestError, urllib.error.URLError, socket.timeout, OSError)):
        return Failure(f"Slack unreachable: {type(exc).__name__}: {exc}", True)
    # Anything else is most likely our bug; retrying with backoff until give-up is safe.
    return Failure(f"{type(exc).__name__}: {exc}", True)


# -- response_url ------------------------------------------------------------------------

def response_url_allowed(url: str | None) -> bool:
    """Only Slack's hooks (or the configured API host, for tests) receive replies.

    The URL comes from a signed payload, but a reply never goes anywhere else, so a
    mistake elsewhere cannot turn this into a request to an internal address.
    """
    if not url or len(url) > 2000:
        return False
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname in RESPONSE_URL_HOSTS:
        return True
    api = urlsplit(api_base_url())
    return settings().slack_api_url is not None and (parts.scheme, parts.netloc) == (api.scheme, api.netloc)


def post_response(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST an interaction reply; raises DeliveryError with the retry verdict."""
    if not response_url_allowed(url):
        raise DeliveryError(Failure("response_url is not a Slack hook", False))
    hook = WebhookClient(url, timeout=int(max(1, CALL_TIMEOUT)), retry_handlers=[])
    resp = hook.send_dict(body)
    if resp.status_code == 200:
        return {"status": 200}
    if resp.status_code == 429:
        wait = _retry_after(resp.headers)
        raise DeliveryError(Failure("response_url rate limited", True, DEFAULT_RETRY_AFTER if wait is None else wait))
    if resp.status_code >= 500:
        raise DeliveryError(Failure(f"response_url answered {resp.status_code}", True))
    # 404 used_url / expired_url and friends: the reply's moment has passed.
    raise DeliveryError(Failure(f"response_url refused: {resp.status_code} {str(resp.body)[:200]}", False))
