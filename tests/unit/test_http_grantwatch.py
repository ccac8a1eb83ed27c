"""GrantWatch's bookkeeping (addons/grantwatch.py), with mitmproxy's test flows: which
requests a revoke waits for, and which refusals close a connection early. The timing
end to end is in tests/integration/http/test_revoke_inflight.py."""
from __future__ import annotations

import asyncio

from mitmproxy.test import tflow

from addons.flowstate import refuse, state
from addons.grantwatch import GrantWatch, waits_for_answer
from app.snapshot import Target
from app.types import Principal, Verdict

WHO = Principal("agent")
API, OTHER = Target("api", "http", {}), Target("other", "http", {})


def _flow(client=None):
    flow = tflow.tflow()
    if client is not None:
        flow.client_conn = client
    state(flow).principal = WHO
    return flow


def _allow(flow, target=API):
    st = state(flow)
    st.verdict, st.target = Verdict("allow"), target
    flow.response = tflow.tresp()


def _no_grant(flow, target=API, held=False):
    st = state(flow)
    st.verdict = Verdict("deny", rule="no-grant", message="gone", status="denied")
    st.target, st.held = target, held
    refuse(flow, 403, {"error": "denied"})


def test_a_revoke_waits_for_undecided_and_refused_requests_not_for_allowed_or_finished_ones():
    undecided, refused, allowed, finished, failed = (_flow() for _ in range(5))
    _no_grant(refused)
    _allow(allowed)
    _no_grant(finished)
    finished.live = False  # its refusal went out
    failed.error = tflow.terr()
    assert waits_for_answer(undecided) and waits_for_answer(refused)
    assert not waits_for_answer(allowed) and not waits_for_answer(finished) and not waits_for_answer(failed)


def test_a_no_grant_refusal_for_the_connections_grant_closes_it_after_the_refusal():
    async def main():
        watch = GrantWatch()
        first = _flow()
        watch.requestheaders(first)
        _allow(first)
        watch.response(first)
        refused = _flow(first.client_conn)
        watch.requestheaders(refused)
        _no_grant(refused)
        watch.response(refused)
        assert first.client_conn.id in watch._closing  # waits for this refusal to go out, then closes
        assert refused.response.headers["connection"] == "close"
        watch.done()

    asyncio.run(main())


def test_a_no_grant_refusal_for_another_host_leaves_the_connection_alone():
    async def main():
        watch = GrantWatch()
        first = _flow()
        watch.requestheaders(first)
        _allow(first)
        watch.response(first)
        elsewhere = _flow(first.client_conn)  # a plain proxy connection, another host
        watch.requestheaders(elsewhere)
        _no_grant(elsewhere, OTHER)
        watch.response(elsewhere)
        assert first.client_conn.id not in watch._closing
        assert "connection" not in elsewhere.response.headers
        watch.done()

    asyncio.run(main())


def test_a_held_request_refused_for_its_grant_closes_a_connection_that_ran_nothing_yet():
    async def main():
        watch = GrantWatch()
        held = _flow()
        watch.requestheaders(held)
        _no_grant(held, API, held=True)  # the gate held it, so a grant stood then
        watch.response(held)
        assert held.client_conn.id in watch._closing
        watch.done()

    asyncio.run(main())
