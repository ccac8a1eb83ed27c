"""The flow -> Operation -> gate.decide -> enforce step. No policy here: the gate decides.

Timing matters more than anything else in this file:
- a JSON or form request is decided in `request`, once its whole body is there (body
  rules, `_method`);
- every other request is decided in `requestheaders`, before a byte of its body is
  read; a large or chunked one then streams upstream, which happens right after this
  hook, so nothing can reach the upstream undecided. An HTTP/2 body of unknown length
  is held instead (capped), so it can be given a Content-Length: an HTTP/1 upstream has
  no other way to tell where it ends.
A `review` verdict is held inside `gate.decide`; this hook awaits it, which pauses this
flow only (mitmproxy runs every flow's hooks in its own task).

An approval covers exactly what the approver saw: method, URL as sent and the whole body
(`app/binding.py`). So a request that needs a review is never held on its headers
alone: the gate answers "deferred" there, the body is read whole (it must declare a
length up to the JSON limit), and the request is held in `request` with its body's
digest. While held, a client that disconnects withdraws it: nothing goes upstream and
the approval stays unused.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import replace

from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http import url

from app.binding import body_digest, http_binding
from app.gate import get_gate
from app.http import operation
from app.http.operation import BadRequest
from app.snapshot import Target
from app.types import Operation, Verdict

from . import shown, streaming
from .flowstate import bad_request, content_length, needs_body, refuse, state, unavailable
from .bodycap import body_cap
from .limits import sizes

log = logging.getLogger(__name__)
CLIENT_POLL = 0.2  # seconds between looks at a held request's client connection
_DISCONNECTED = "the client disconnected"


def check_destination(flow: http.HTTPFlow) -> None:
    """The Host header, the request target and the TLS server name must all name the
    host the bytes go to; otherwise a CDN would serve whatever the Host header says,
    behind an allowed address (domain fronting)."""
    req = flow.request
    dest = (operation.normalise_host(req.host), req.port)
    hosts = req.headers.get_all("host")
    if len(hosts) > 1:
        raise BadRequest("more than one Host header")
    for authority in ([req.authority] if req.authority else []) + hosts:
        try:
            host, port = url.parse_authority(authority, check=True)
        except ValueError:
            raise BadRequest(f"malformed authority {authority!r}") from None
        if (operation.normalise_host(host), port or operation.default_port(req.scheme)) != dest:
            raise BadRequest(f"{authority!r} does not match the destination {dest[0]}:{dest[1]}")
    sni = flow.client_conn.sni
    if sni and operation.normalise_host(sni) != dest[0]:
        raise BadRequest(f"the TLS server name {sni!r} does not match the destination {dest[0]}")


def decoded_body(req: http.Request, limit: int) -> bytes | None:
    """The body with its content-encoding undone, or None past `limit` bytes: a small
    compressed body must not inflate without bound in memory."""
    raw = req.raw_content or b""
    encoding = req.headers.get("content-encoding")
    if not raw or not encoding:
        return raw if len(raw) <= limit else None
    decode = streaming.decoder_for(encoding)
    if decode is None:
        raise BadRequest(f"the content-encoding {encoding!r} cannot be decoded")
    out = bytearray()
    try:
        for i in range(0, len(raw), 16384):
            out += decode(raw[i:i + 16384])
            if len(out) > limit:
                return None
    except streaming.DecodeError:
        raise BadRequest("the request body cannot be decoded") from None
    return bytes(out)


def refusal(verdict: Verdict) -> tuple[int, dict, dict[str, str]]:
    """The response contract (docs/http.md) for a verdict that is not an allow."""
    if verdict.action == "review":
        retry = verdict.retry_after or 30
        return 403, {
            "error": "approval_pending", "review_id": verdict.review_id, "review_url": verdict.review_url,
            "retry_after": retry, "rule": verdict.rule, "message": verdict.message,
        }, {"Retry-After": str(retry)}
    if verdict.status == "error":
        if verdict.review_id is not None:  # held, then the store failed: the review lives on
            retry = verdict.retry_after or 30
            return 503, {"error": "unavailable", "review_id": verdict.review_id, "review_url": verdict.review_url,
                         "retry_after": retry, "message": verdict.message}, {"Retry-After": str(retry)}
        return 503, {"error": "unavailable", "message": verdict.message}, {}
    if verdict.status in ("rejected", "expired", "withdrawn"):
        return 403, {
            "error": verdict.status, "review_id": verdict.review_id, "review_url": verdict.review_url,
            "rule": verdict.rule, "message": verdict.message, "reason": verdict.reason,
        }, {}
    return 403, {"error": "denied", "rule": verdict.rule, "message": verdict.message}, {}


def fail_closed(hook):
    """mitmproxy logs an exception in an addon hook and carries on with the flow, which
    would send an undecided request upstream: any such failure refuses it instead."""

    @functools.wraps(hook)
    async def guarded(self, flow: http.HTTPFlow) -> None:
        try:
            await hook(self, flow)
        except Exception:
            log.exception("deciding %s %s failed", flow.request.method, flow.request.host)
            if flow.response is None and not (flow.request.stream and state(flow).allowed):
                state(flow).verdict = None
                unavailable(flow, "airlock could not decide on this request")

    return guarded


class Gatekeeper:
    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        req = flow.request
        size = content_length(req)
        if needs_body(req):
            if size is not None and size > sizes().json:
                bad_request(flow, f"JSON and form bodies larger than {sizes().json} bytes cannot be checked", 413)
            else:
                body_cap(flow, sizes().json)  # a chunked one is counted as it arrives
            return
        # A request that may have a body is held only once its body is here (`request`).
        await self._decide(flow, None, b"" if size == 0 else None)
        st = state(flow)
        if st.verdict is None and not st.refused:  # deferred: needs a review, bound to its body
            if size is None and "chunked" in req.headers.get("transfer-encoding", "").lower():
                bad_request(flow, "a request that needs approval must declare its Content-Length, so the "
                            "approval can cover its whole body", 411)
            elif size is not None and size > sizes().json:
                bad_request(flow, f"a request that needs approval can have at most {sizes().json} bytes of "
                            "body, so the approval can cover all of it", 413)
            elif size is None:
                body_cap(flow, sizes().json)  # HTTP/2 without a length: counted as it arrives
            return
        if not st.allowed:
            return
        if size is None and (req.is_http2 or req.is_http3):
            # No length to frame it by on an HTTP/1 upstream: held (capped) and given one.
            body_cap(flow, sizes().json)
        elif size is None or size > sizes().body:
            req.stream = True

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        req = flow.request
        if (req.is_http2 or req.is_http3) and "content-length" not in req.headers and req.raw_content:
            # mitmproxy sends an HTTP/2 body to an HTTP/1 upstream without framing: the
            # upstream would read it as the next request, one the gate never saw.
            req.headers["content-length"] = str(len(req.raw_content))
        if state(flow).verdict is not None:
            return  # decided on its headers
        body, overrides = None, ()
        raw = req.raw_content or b""
        if needs_body(req):
            limit = sizes().json
            try:
                content = decoded_body(req, limit)
                if content is None:
                    bad_request(flow, f"JSON and form bodies larger than {limit} bytes cannot be checked", 413)
                    return
                content_type = req.headers.get("content-type")
                if content and operation.is_json(content_type):
                    body = operation.parse_json_body(content)
                    overrides = operation.json_overrides(body)
                elif content:
                    overrides = operation.body_overrides(content_type, content)
            except BadRequest as exc:
                bad_request(flow, exc.message)
                return
        await self._decide(flow, body, raw, overrides)

    async def _decide(self, flow: http.HTTPFlow, body: object | None, raw: bytes | None,
                      overrides: tuple[str, ...] = ()) -> None:
        """`raw`: the whole body as sent, or None when it is not here yet (the gate then
        defers a review to `request`). `overrides`: method overrides found in the body."""
        st = state(flow)
        if st.principal is None:  # identity answers first; reaching here is a bug, so refuse
            unavailable(flow, "airlock could not establish who is calling")
            return
        req = flow.request
        gate = get_gate()
        try:
            check_destination(flow)
            target = await self._route(gate, req)
            op = operation_of(req, target.name if target else "", body, raw, overrides)
        except BadRequest as exc:
            bad_request(flow, exc.message)
            return
        except Exception:
            log.exception("routing %s failed", req.host)
            unavailable(flow, "airlock cannot route requests right now")
            return
        if target is not None and st.recording is not None and not st.recording.connection:
            st.recording.update(connection=target.name)
        with watching(flow) as gone:
            verdict = await gate.decide(st.principal, op, recording=st.recording, run_id=st.run_id,
                                        on_hold=gone.start, gone=gone.future, defer_review=raw is None)
        if verdict.status == "deferred":
            return
        if verdict.action == "allow" and verdict.status == "approved" and not client_here(flow):
            await gate.give_back(verdict, _DISCONNECTED)  # approved as it left: nothing goes upstream
            verdict = replace(verdict, action="deny", status="withdrawn", message=_DISCONNECTED)
        st.verdict, st.target = verdict, target
        if verdict.action == "allow":
            if verdict.masks:
                masker = gate.masker(verdict.masks)
                st.masker = masker if masker.active else None
            return
        status, payload, headers = refusal(verdict)
        refuse(flow, status, payload, headers)

    @staticmethod
    async def _route(gate, req: http.Request) -> Target | None:
        for key in operation.route_keys(req.scheme, req.host, req.port):
            target = await gate.connection_for_host(key)
            if target is not None:
                return target
        return None


def operation_of(req: http.Request, connection: str, body: object | None, raw: bytes | None,
                 overrides: tuple[str, ...] = ()) -> Operation:
    """The request as the gate sees it; bound to its whole body when `raw` is given."""
    op = operation.build(operation.Request(
        method=req.method, scheme=req.scheme, host=req.host, port=req.port, path=req.path,
        override=tuple(v for name, v in req.headers.items(multi=True) if operation.override_header(name))
        + overrides,
        websocket=req.headers.get("upgrade", "").lower() == "websocket",
        body=body,
    ), connection=connection)
    return bind(op, req, raw) if raw is not None else op


def bind(op: Operation, req: http.Request, raw: bytes) -> Operation:
    """The operation bound to exactly this request: approve-once covers nothing else."""
    summary = f"{len(raw)} bytes, {req.headers.get('content-type', 'no content type')}, {body_digest(raw)}"
    items = list(req.headers.items(multi=True))
    op = replace(op, headers=shown.headers(items), reason=shown.reason(items),
                 body_text=shown.body(req.headers.get("content-type"), raw, op.body))
    return replace(op, binding=http_binding(
        op, real_method=req.method, scheme=req.scheme, port=req.port, target=req.path,
        content_type=req.headers.get("content-type", ""), content_encoding=req.headers.get("content-encoding", ""),
        body=raw), body_summary=summary if raw else "")


def client_here(flow: http.HTTPFlow) -> bool:
    """The client can still read our answer: it has not closed its side of the connection."""
    return bool(flow.client_conn.state & ConnectionState.CAN_READ)


class _Watch:
    """Completes `future` when the client of a held request goes away. mitmproxy raises
    no hook for that while this flow's hook is running, but it keeps reading the client
    socket and marks the connection; a held request looks a few times a second."""

    def __init__(self, flow: http.HTTPFlow):
        self.flow = flow
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task | None = None

    def start(self, review_id: int, url: str) -> None:
        state(self.flow).held = True
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while client_here(self.flow) and not self.future.done():
            await asyncio.sleep(CLIENT_POLL)
        if not self.future.done():
            self.future.set_result(_DISCONNECTED)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


@contextlib.contextmanager
def watching(flow: http.HTTPFlow):
    watch = _Watch(flow)
    try:
        yield watch
    finally:
        watch.stop()
