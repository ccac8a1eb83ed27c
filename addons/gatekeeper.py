"""The flow -> Operation -> gate.decide -> enforce step. No policy here: the gate decides.

Timing matters more than anything else in this file:
- a JSON request is decided in `request`, once its whole body is there (body rules);
- every other request is decided in `requestheaders`, before a byte of its body is
  read; a large or chunked one then streams upstream, which happens right after this
  hook, so nothing can reach the upstream undecided.
A `review` verdict is held inside `gate.decide`; this hook awaits it, which pauses this
flow only (mitmproxy runs every flow's hooks in its own task).
"""
from __future__ import annotations

import logging

from mitmproxy import http
from mitmproxy.net.http import url

from app.gate import get_gate
from app.snapshot import Target
from app.types import Verdict

from . import operation
from .flowstate import bad_request, content_length, needs_body, refuse, state, unavailable
from .limits import sizes
from .operation import BadRequest

log = logging.getLogger(__name__)


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
    if verdict.status in ("rejected", "expired"):
        return 403, {
            "error": verdict.status, "review_id": verdict.review_id, "review_url": verdict.review_url,
            "rule": verdict.rule, "message": verdict.message,
        }, {}
    return 403, {"error": "denied", "rule": verdict.rule, "message": verdict.message}, {}


class Gatekeeper:
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        req = flow.request
        if needs_body(req):
            size = content_length(req)
            if size is not None and size > sizes().json:
                bad_request(flow, f"JSON bodies larger than {sizes().json} bytes cannot be checked", 413)
            return
        await self._decide(flow, None)
        size = content_length(req)
        if state(flow).allowed and (size is None or size > sizes().body):
            req.stream = True

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        if state(flow).verdict is not None:
            return  # decided on its headers
        try:
            content = flow.request.get_content()  # content-encoding undone
            body = operation.parse_json_body(content) if content else None
        except BadRequest as exc:
            bad_request(flow, exc.message)
            return
        except ValueError:
            bad_request(flow, "the request body cannot be decoded")
            return
        await self._decide(flow, body)

    async def _decide(self, flow: http.HTTPFlow, body: object | None) -> None:
        st = state(flow)
        if st.principal is None:  # identity answers first; reaching here is a bug, so refuse
            unavailable(flow, "airlock could not establish who is calling")
            return
        req = flow.request
        gate = get_gate()
        try:
            check_destination(flow)
            target = await self._route(gate, req)
            op = operation.build(operation.Request(
                method=req.method, scheme=req.scheme, host=req.host, port=req.port, path=req.path,
                override=tuple(v for name in operation.OVERRIDE_HEADERS for v in req.headers.get_all(name)),
                websocket=req.headers.get("upgrade", "").lower() == "websocket",
                body=body,
            ), connection=target.name if target else "")
        except BadRequest as exc:
            bad_request(flow, exc.message)
            return
        except Exception:
            log.exception("routing %s failed", req.host)
            unavailable(flow, "airlock cannot route requests right now")
            return
        if target is not None and st.recording is not None and not st.recording.connection:
            st.recording.update(connection=target.name)
        verdict = await gate.decide(st.principal, op, recording=st.recording, run_id=st.run_id)
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
