"""Recording: one session per client connection, one input and one output per exchange.

`Sessions` runs before the gatekeeper: it opens the session, takes the run id from
X-Airlock-Run (which never goes upstream) and records the request as it will be
decided, so a session reads input, decision (written by the gate), output.
`Exchanges` runs last, after masking: what it records is what the runtime saw.
Every event of an exchange names its flow ("flow": the mitmproxy flow id), the gate's
decision too (through `ExchangeRecording`): on an HTTP/2 connection several exchanges
are in flight at once, and only the flow ties an answer to the decision it followed.
Secrets never go in: credential headers, injected headers and secret-looking values
are redacted, and bodies are capped.
"""
from __future__ import annotations

import functools
import json
import weakref
from typing import Any

from mitmproxy import connection, http

from app import redaction
from app.http.operation import is_json, shown_url
from app.masking.media import is_binary
from app.recording import SessionRecording, recorder

from .flowstate import FlowState, needs_body, state
from .limits import sizes

RUN_HEADER = "x-airlock-run"
REDACTED = redaction.REDACTED


# Anything redaction.scrub could redact contains one of these words; text without any is
# kept as it is and skips the full scrub, which is most of the cost of recording an
# exchange. Plain substring tests: a case-insensitive regex alternation is 10x slower.
# tests/unit/test_http_recording.py keeps this in step with app.redaction.
SUSPECT_WORDS = ("pass", "token", "secret", "private", "auth", "cookie", "credential", "bearer", "basic",
                 "alk_", "identified")


def suspect(text: str) -> bool:
    low = text.lower()
    return (any(word in low for word in SUSPECT_WORDS) or ("api" in low and "key" in low)
            or ("://" in low and "@" in low))


@functools.lru_cache(maxsize=1024)
def _secret_name(name: str) -> bool:
    return redaction.scrub({name: "x"})[name] == REDACTED


def printable(text: str) -> str:
    """mitmproxy hands over non-UTF-8 header and path bytes as surrogates, which no store
    can encode: they are kept as U+FFFD so one odd byte cannot stall a recording batch."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def scrubbed_text(text: str) -> str:
    return redaction.scrub(text) if suspect(text) else text


def recorded_headers(headers: http.Headers, injected: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items(multi=True):
        name, value = printable(name.lower()), printable(value)
        out[name] = f"{out[name]}, {value}" if name in out else value
    for name, value in out.items():
        if name in injected or _secret_name(name):
            out[name] = REDACTED
        elif suspect(value):
            out[name] = redaction.scrub(value)
    return out


def recorded_body(content: bytes | None, content_type: str | None, encoding: str | None = None,
                  total: int | None = None) -> dict[str, Any] | None:
    if not content:
        return None
    limit = sizes().record
    size = len(content) if total is None else total
    if encoding or is_binary(content_type):
        return {"bytes": size, "omitted": encoding or "binary"}
    shown = content[:limit]
    truncated = size > len(shown)
    text = shown.decode("utf-8", "replace")
    if suspect(text) and is_json(content_type) and not truncated:
        try:  # secret-looking keys are redacted by name, which needs the structure
            text = json.dumps(redaction.scrub(json.loads(text)), ensure_ascii=False)
        except ValueError:
            text = redaction.scrub(text)
    else:
        text = scrubbed_text(text)
    return {"text": text, "bytes": size, "truncated": truncated}


class ExchangeRecording:
    """One exchange's view of its session's recording, as the gate writes to it: every
    event written through it names the flow. The gate's decision event otherwise names
    only the operation, and two concurrent streams may ask for the same one."""

    __slots__ = ("_session", "flow")

    def __init__(self, session: SessionRecording, flow: str) -> None:
        self._session, self.flow = session, flow

    @property
    def id(self) -> str:
        return self._session.id

    @property
    def session(self) -> SessionRecording:
        return self._session

    def event(self, kind: str, data: dict[str, Any] | str) -> None:
        if type(data) is dict and "flow" not in data:
            data = {**data, "flow": self.flow}
        self._session.event(kind, data)

    def __getattr__(self, name: str) -> Any:  # connection, update, tag_run, ...: the session's
        return getattr(self._session, name)


class Sessions:
    def __init__(self) -> None:
        self._sessions: weakref.WeakKeyDictionary[connection.Client, SessionRecording] = weakref.WeakKeyDictionary()
        self._runs: weakref.WeakKeyDictionary[connection.Client, str] = weakref.WeakKeyDictionary()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        run = flow.request.headers.pop(RUN_HEADER, None)
        if run and not flow.response:
            self._runs[flow.client_conn] = run.strip()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        run = flow.request.headers.pop(RUN_HEADER, None)  # stripped whatever happens next
        if flow.response or flow.error:
            return
        st = state(flow)
        if st.principal is None:
            return
        st.run_id = (run.strip() if run else None) or self._runs.get(flow.client_conn)
        st.recording = ExchangeRecording(self._session(flow, st), flow.id)
        if not needs_body(flow.request):
            self._record_input(flow, st)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        st = state(flow)
        if st.recording is not None and not st.input_recorded:
            self._record_input(flow, st)

    def client_disconnected(self, client: connection.Client) -> None:
        rec = self._sessions.pop(client, None)
        if rec is not None:
            rec.close()

    def done(self) -> None:
        for rec in list(self._sessions.values()):
            rec.close()
        self._sessions.clear()

    def _session(self, flow: http.HTTPFlow, st: FlowState) -> SessionRecording:
        client = flow.client_conn
        rec = self._sessions.get(client)
        if rec is None:
            peer = client.peername
            rec = self._sessions[client] = recorder().open(
                protocol="http",
                service_account=st.principal.service_account,
                client_addr=f"{peer[0]}:{peer[1]}" if peer else "",
                run_id=st.run_id,
                # The connection is known only once routed; the audit names what was asked for.
                meta={"host": f"{flow.request.host}:{flow.request.port}"},
            )
        elif st.run_id:
            rec.tag_run(st.run_id)
        return rec

    @staticmethod
    def _record_input(flow: http.HTTPFlow, st: FlowState) -> None:
        st.input_recorded = True
        req = flow.request
        data: dict[str, Any] = {
            "flow": flow.id,
            "method": printable(req.method),
            "url": printable(shown_url(req.scheme, req.host, req.port, req.path)),
            "headers": recorded_headers(req.headers, ()),
        }
        if not req.stream and req.raw_content:
            try:
                body = recorded_body(req.get_content(), req.headers.get("content-type"))
            except ValueError:
                body = recorded_body(req.raw_content, None, req.headers.get("content-encoding"))
            if body:
                data["body"] = body
        st.recording.event("input", data)


class Exchanges:
    def response(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if st.recording is None or flow.response is None:
            return
        resp = flow.response
        data: dict[str, Any] = {
            "flow": flow.id,
            "status": resp.status_code,
            "headers": recorded_headers(resp.headers, st.injected_headers),
        }
        content_type = resp.headers.get("content-type")
        if resp.stream:
            body = recorded_body(bytes(st.captured or b""), content_type, resp.headers.get("content-encoding"),
                                 total=st.streamed_bytes)
            if body:
                body["streamed"] = True
        else:
            try:
                body = recorded_body(resp.get_content(), content_type)
            except ValueError:
                body = recorded_body(resp.raw_content, None, resp.headers.get("content-encoding"))
        if body:
            data["body"] = body
        if st.masked:  # values actually replaced; a mask rule that found nothing says nothing
            data["masked"] = st.masked
        st.recording.event("output", data)

    def error(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if st.recording is not None and flow.error is not None:
            st.recording.event("notice", {"flow": flow.id, "error": flow.error.msg})

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if st.recording is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        data: dict[str, Any] = {"flow": flow.id, "websocket": True, "dropped": message.dropped or None}
        limit = sizes().record
        if message.is_text:
            data["text"] = scrubbed_text(message.content[:limit].decode("utf-8", "replace"))
        else:
            data["bytes"] = len(message.content)
        if not message.from_client and st.masked:  # masking.py counts each message afresh
            data["masked"] = st.masked
        st.recording.event("input" if message.from_client else "output", data)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if st.recording is not None and flow.websocket is not None:
            st.recording.event("notice", {"flow": flow.id, "websocket": "closed",
                                          "code": flow.websocket.close_code, "reason": flow.websocket.close_reason})
