"""addons.gatekeeper fails closed: an unexpected error while deciding refuses the
request (mitmproxy would log it and forward the request undecided)."""
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
