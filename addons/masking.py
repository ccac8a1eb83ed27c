"""Masking of what comes back: JSON by key and detector, text by detector, and the
connection's injected credentials scrubbed wherever an upstream echoes them, in every
content type (an image can carry a reflected header as well as a JSON document can).

Media that detectors cannot read (images, archives, PDF) under a mask verdict are
refused (502), unless every mask rule of the verdict lets that media type through
(`unmasked_types`): a mask the body cannot honour is never silently skipped.

A body of known length up to the body limit is held whole and masked in `response`.
Anything larger or of unknown length streams through a chunk function chosen in
`responseheaders` (streaming.py). A JSON body under field rules needs the whole
document, so it is held whole up to the JSON limit instead, and refused beyond it.
WebSocket messages from the server are masked one by one.
"""
from __future__ import annotations

import functools
import logging

from mitmproxy import http

from app.http.operation import is_json
from app.masking import MaskingError, media

from . import streaming
from .flowstate import FlowState, content_length, json_response, state
from .limits import sizes

log = logging.getLogger(__name__)


def _has_work(st: FlowState) -> bool:
    return st.masker is not None or bool(st.secrets)


def _plan(st: FlowState, content_type: str | None) -> media.BodyPlan:
    """What app.masking.media decides for this body under the flow's active masks."""
    masks = st.verdict.masks if st.masker is not None and st.verdict is not None else ()
    return media.body_plan(masks, content_type)


def _no_body(flow: http.HTTPFlow) -> bool:
    status = flow.response.status_code
    return flow.request.method == "HEAD" or status < 200 or status in (204, 304)


def _refuse(flow: http.HTTPFlow, message: str, *, streamed: bool) -> None:
    """Replace the upstream's response by a 502. After the headers hook the upstream body
    still arrives: a streamed refusal swallows it and sends ours instead."""
    state(flow).refused = True
    flow.response = json_response(502, {"error": "unmaskable", "message": message})
    if streamed:
        flow.response.stream = streaming.Discard(flow.response.raw_content or b"")


def _scrub_headers(resp: http.Response, secrets: tuple[bytes, ...]) -> None:
    if not secrets:
        return
    fields = tuple((k, streaming.scrub(v, secrets)) for k, v in resp.headers.fields)
    if fields != resp.headers.fields:
        resp.headers.fields = fields
    if resp.data.reason:  # an HTTP/1 reason phrase can echo too
        resp.data.reason = streaming.scrub(resp.data.reason, secrets)


def _fail_closed(streamed: bool):
    """mitmproxy logs an exception in an addon hook and sends the response on as it is:
    unmasked. Any such failure replaces the response instead."""

    def wrap(hook):
        @functools.wraps(hook)
        def guarded(self, flow: http.HTTPFlow) -> None:
            try:
                hook(self, flow)
            except Exception:
                log.exception("masking the response of %s failed", flow.request.host)
                if flow.response is not None and not state(flow).refused:
                    _refuse(flow, "the response could not be masked", streamed=streamed)

        return guarded

    return wrap


class ResponseMasker:
    @_fail_closed(streamed=True)
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if flow.error or not st.allowed or flow.response is None or _no_body(flow):
            return
        resp = flow.response
        _scrub_headers(resp, st.secrets)
        size = content_length(resp)
        limits = sizes()
        if size is not None and size <= limits.body:
            return  # held whole: `response` masks it
        content_type = resp.headers.get("content-type")
        plan = _plan(st, content_type)
        if plan.action == "refuse":
            _refuse(flow, plan.reason, streamed=True)
            return
        if not _has_work(st):
            resp.stream = streaming.Passthrough(st, limits.record)
            return
        decode = streaming.decoder_for(resp.headers.get("content-encoding"))
        if decode is None:
            _refuse(flow, f"content-encoding {resp.headers.get('content-encoding')!r} cannot be decoded for masking",
                    streamed=True)
            return
        masker = st.masker if plan.action == "mask" else None
        if masker is not None and masker.has_fields and is_json(content_type):
            if size is not None and size <= limits.json:
                return  # held whole after all: field rules need the document
            if size is not None:
                _refuse(flow, f"the response is larger than {limits.json} bytes and cannot be masked", streamed=True)
                return
            resp.stream = streaming.WholeDocument(st, decode, masker, content_type or "", limits.json, limits.record)
        else:
            encoding = streaming.charset(content_type)
            if not streaming.known_encoding(encoding):
                _refuse(flow, f"charset {encoding!r} cannot be read for masking", streamed=True)
                return
            resp.stream = streaming.MaskingStream(st, decode, masker, limits.record, encoding)
        # What we send is identity-encoded and of a length nobody knows yet.
        resp.headers.pop("content-encoding", None)
        resp.headers.pop("content-length", None)
        if not (flow.request.is_http2 or flow.request.is_http3):
            resp.headers["transfer-encoding"] = "chunked"

    @_fail_closed(streamed=False)
    def response(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        resp = flow.response
        if flow.error or not st.allowed or resp is None or resp.stream or _no_body(flow):
            return
        content_type = resp.headers.get("content-type")
        plan = _plan(st, content_type)
        if plan.action == "refuse":
            _refuse(flow, plan.reason, streamed=False)
            return
        if not _has_work(st) or not resp.raw_content:
            return
        try:
            content = resp.get_content()
        except ValueError:
            _refuse(flow, f"content-encoding {resp.headers.get('content-encoding')!r} cannot be decoded for masking",
                    streamed=False)
            return
        try:
            masked = streaming.mask_body(content, content_type, st.masker if plan.action == "mask" else None,
                                         st.secrets)
        except MaskingError as exc:
            _refuse(flow, f"the response could not be masked ({exc})", streamed=False)
            return
        if masked != content:
            resp.headers.pop("content-encoding", None)  # send it identity-encoded: no need to recompress
            resp.content = masked

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        try:
            self._websocket_message(flow)
        except Exception:
            log.exception("masking a WebSocket message from %s failed", flow.request.host)
            if flow.websocket is not None:
                flow.websocket.messages[-1].drop()  # never passed on unmasked

    def _websocket_message(self, flow: http.HTTPFlow) -> None:
        st = state(flow)
        if flow.websocket is None or not st.allowed or (st.masker is None and not st.secrets):
            return
        message = flow.websocket.messages[-1]
        if message.from_client:
            return
        masks = st.verdict.masks if st.masker is not None and st.verdict is not None else ()
        plan = media.message_plan(masks, message.is_text)
        if plan.action == "refuse":
            log.info("dropped a WebSocket message from %s: %s", flow.request.host, plan.reason)
            message.drop()
            return
        if plan.action == "scrub":
            message.content = streaming.scrub(message.content, st.secrets)
            return
        kind = "application/json" if message.content.lstrip()[:1] in (b"{", b"[") else "text/plain"
        try:
            message.content = streaming.mask_body(message.content, kind, st.masker, st.secrets)
        except MaskingError:
            try:
                message.content = streaming.mask_body(message.content, "text/plain", st.masker, st.secrets)
            except MaskingError:
                message.drop()  # fail closed: an unmaskable message never reaches the runtime
