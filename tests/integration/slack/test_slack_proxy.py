"""End to end: a runtime's HTTP request held by `airlock proxy` (a subprocess), approved by a Slack click."""
from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

import pytest

from app.db import session_scope
from app.identity import issue_token
from tests.integration.http.conftest import start_proxy, stop_proxy
from tests.integration.http.upstream import Upstream, serve_in_thread
from tests.integration.slack import scenario as sc
from tests.integration.slack.test_slack_votes import _has_buttons, _pending_id, _posted, _votes


@pytest.fixture
def deploy_world(slack_env, tmp_path):
    upstream = Upstream()
    server = serve_in_thread(upstream, None, None)  # plain HTTP: the hold is what matters here
    policy = sc.POLICY.replace("grants:\n", (
        "  - name: deploy-api\n    type: http\n    hosts: [\"localhost:%d\"]\n"
        "grants:\n  - {service_account: billing-agent, connection: deploy-api}\n") % upstream.port)
    policy = policy.replace("rules:\n", (
        "rules:\n  - name: deploys-need-dba\n    match: {connection: deploy-api, path: \"/deploy/*\"}\n"
        "    action: review\n    approvers: {groups: [dba]}\n    hold: 30s\n"))
    sc.seed(policy)
    with session_scope() as s:
        token = issue_token(s, "billing-agent", timedelta(hours=1)).token
    env = {k: v for k, v in os.environ.items() if k.startswith("AIRLOCK_") or k in ("PATH", "HOME", "NO_PROXY")}
    proxy = start_proxy(env, tmp_path / "proxy.log")
    yield proxy, upstream, token
    stop_proxy(proxy)
    server.should_exit = True


def test_a_request_held_by_the_proxy_goes_through_after_a_slack_approval(client, slack_env, deploy_world, settle):
    fake = slack_env
    proxy, upstream, token = deploy_world
    result: dict = {}

    def runtime() -> None:
        started = time.monotonic()
        result["response"] = proxy.requests(token, user="billing-agent").post(
            f"http://localhost:{upstream.port}/deploy/v2", json={"version": "2.0"}, timeout=60)
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=runtime)
    thread.start()
    rid = settle(_pending_id, timeout=20, what="the proxy's review")
    channel, ts, message = _posted(fake, settle, rid)
    assert "POST" in message["blocks"][1]["text"]["text"] and "/deploy/v2" in message["blocks"][1]["text"]["text"]
    assert upstream.requests_to("/deploy/") == []  # held: nothing forwarded yet
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_DAVE", channel=channel, ts=ts))
    thread.join(40)
    response = result.get("response")
    assert response is not None and response.status_code == 200, (response, proxy.tail())
    assert result["elapsed"] < 25  # woken by the click, well before the 30 s hold ends
    assert len(upstream.requests_to("/deploy/v2")) == 1
    assert _votes(rid) == [("dave@example.com", "approve", None, "slack")]
    settle(lambda: not _has_buttons(fake, channel, ts), what="the message updated")
