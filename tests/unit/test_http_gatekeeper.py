"""The addons fail closed: an unexpected error while deciding refuses the request, and
one while masking replaces the response (mitmproxy would log either and carry on,
forwarding the request undecided or the response unmasked)."""
from __future__ import annotations

import asyncio

from mitmproxy.test import tflow

import addons.gatekeeper as gatekeeper
from addons.flowstate import state
from app.types import Principal


class _BrokenGate:
    async def connection_for_host(self, key):
        return None

    async def decide(self, *args, **kwargs):
        raise RuntimeError("boom")


def test_an_error_in_the_decision_refuses_the_request(monkeypatch):
    monkeypatch.setattr(gatekeeper, "get_gate", lambda: _BrokenGate())
    for hook in ("requestheaders", "request"):
        flow = tflow.tflow()
        state(flow).principal = Principal("agent")
        asyncio.run(getattr(gatekeeper.Gatekeeper(), hook)(flow))
        assert flow.response is not None and flow.response.status_code == 503, hook
        assert not state(flow).allowed


def test_a_json_body_that_breaks_the_parser_unexpectedly_is_refused(monkeypatch):
    def explode(data):
        raise MemoryError("too deep")

    monkeypatch.setattr(gatekeeper.operation, "parse_json_body", explode)
    flow = tflow.tflow()
    flow.request.method = "POST"
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = b'{"a": 1}'
    state(flow).principal = Principal("agent")
    asyncio.run(gatekeeper.Gatekeeper().request(flow))
    assert flow.response is not None and flow.response.status_code == 503


def test_an_error_while_masking_replaces_the_response(monkeypatch):
    import addons.masking as masking
    from app.types import Verdict

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(masking.streaming, "mask_body", explode)
    flow = tflow.tflow(resp=True)
    flow.response.headers["content-type"] = "application/json"
    flow.response.content = b'{"email": "ann@example.com"}'
    st = state(flow)
    st.verdict, st.secrets = Verdict("allow"), (b"secret-value-123",)
    masking.ResponseMasker().response(flow)
    assert flow.response.status_code == 502 and b"ann@example.com" not in flow.response.content
