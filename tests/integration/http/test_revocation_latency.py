"""The 1 s promise on an open HTTPS tunnel: from the commit of a token's revocation to
the first refused request, less than a second (DESIGN §2), measured."""
from __future__ import annotations

import time
from datetime import timedelta

from app.db import session_scope
from app.identity import issue_token, revoke_token

from tests.integration.multinode.probe import Probe

PROMISE = 1.0


def test_a_revoke_reaches_an_open_tunnel_within_a_second(proxy, world, api):
    with session_scope() as s:
        issued = issue_token(s, "agent", timedelta(hours=1))
    with proxy.httpx(issued.token) as client:
        probe = Probe(lambda: client.get(f"{api}/latency/revoke").status_code == 200).start()
        try:
            probe.wait_through(5)
            with session_scope() as s:
                revoke_token(s, issued.id, by="test")
            committed = time.monotonic()
            delay = probe.refusal_after(committed)
            time.sleep(0.3)
        finally:
            probe.stop()
    print(f"revoke -> refusal on an open tunnel: {delay * 1000:.0f} ms")
    assert delay < PROMISE, f"the tunnel still answered {delay:.2f} s after the revoke"
    assert not probe.through_after(committed + PROMISE)
