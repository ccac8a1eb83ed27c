"""What the addons know about one flow, and the responses airlock itself sends.

Addons talk to each other only through `state(flow)`: identity puts the principal
there, the gatekeeper the verdict, the injector the secrets to keep from the runtime.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from app.http.operation import is_form, is_json
from app.masking import Masker
from app.snapshot import Target
from app.types import Principal, Verdict

if TYPE_CHECKING:
    from .recording import ExchangeRecording

KEY = "airlock"
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


@dataclass(slots=True)
class FlowState:
    principal: Principal | None = None
    run_id: str | None = None
    recording: ExchangeRecording | None = None  # the session's, naming this flow on every event
    target: Target | None = None
    verdict: Verdict | None = None
    masker: Masker | None = None  # set only when the verdict masks something
    injected: bool = False
    # Values injected on the way out: scrubbed from whatever comes back.
    secrets: tuple[bytes, ...] = ()
    injected_headers: tuple[str, ...] = ()
    refused: bool = False  # the response is airlock's own
    held: bool = False  # the gate held it for review (so a grant stood when it was decided)
    input_recorded: bool = False
    captured: bytearray | None = None  # the start of a streamed response, for the recording
    streamed_bytes: int = 0
    masked: int = 0  # values masking or scrubbing actually replaced (what the recording says)
    notes: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.refused and self.verdict is not None and self.verdict.action == "allow"


def state(flow: http.HTTPFlow) -> FlowState:
    st = flow.metadata.get(KEY)
    if st is None:
        st = flow.metadata[KEY] = FlowState()
    return st


def json_response(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> http.Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return http.Response.make(status, body, {**JSON_HEADERS, **(headers or {})})


def refuse(flow: http.HTTPFlow, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    """Answer the runtime ourselves; nothing of this flow goes upstream."""
    state(flow).refused = True
    # mitmproxy cannot both stream a request upstream and answer it itself.
    flow.request.stream = False
    flow.response = json_response(status, payload, headers)


def unavailable(flow: http.HTTPFlow, message: str) -> None:
    refuse(flow, 503, {"error": "unavailable", "message": message})


def bad_request(flow: http.HTTPFlow, message: str, status: int = 400) -> None:
    refuse(flow, status, {"error": "bad_request", "message": message})


def content_length(message: http.Message) -> int | None:
    """The declared body size, or None when it is unknown (chunked, HTTP/2 without one)."""
    values = message.headers.get_all("content-length")
    if len(values) != 1 or "chunked" in message.headers.get("transfer-encoding", "").lower():
        return None
    try:
        size = int(values[0])
    except ValueError:
        return None
    return size if size >= 0 else None


def needs_body(request: http.Request) -> bool:
    """True when the decision must wait for the body: JSON bodies are matched by rules,
    and a form body may name the method (`_method`).

    Everything else is decided on its headers, before a byte of body is read, so a large
    upload can stream once allowed.
    """
    content_type = request.headers.get("content-type")
    return (is_json(content_type) or is_form(content_type, request.method)) and content_length(request) != 0
