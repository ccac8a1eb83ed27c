"""`/airlock link CODE`: a signed-in portal user makes a code, the Slack user types it."""
from __future__ import annotations

import re

from sqlalchemy import select, update

from app.db import session_scope
from app.models import AuditEntry, SlackLinkCode, User, utcnow
from tests.integration.slack import scenario as sc
from tests.integration.slack.test_slack_updates import _csrf, _login
from tests.integration.slack.test_slack_votes import _posted, _votes


def _slack_id(email: str) -> str | None:
    with session_scope() as s:
        return s.scalar(select(User.slack_user_id).where(User.email == email))


def _audit(action: str) -> list[AuditEntry]:
    with session_scope() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))


def _make_code(portal) -> str:
    resp = portal.post("/slack/link", data={"csrf_token": _csrf(portal, "/slack/link")})
    assert resp.status_code == 200
    m = re.search(r"/airlock link ([A-Z2-9]{5}-[A-Z2-9]{5})", resp.get_data(as_text=True))
    assert m, resp.get_data(as_text=True)[:500]
    return m.group(1)


def _command_text(client, text: str, user: str) -> str:
    resp = sc.post_command(client, text, user=user)
    assert resp.status_code == 200 and resp.get_json()["response_type"] == "ephemeral"
    return resp.get_json()["text"]


def test_a_portal_code_typed_in_slack_links_the_accounts(app, client, slack_env, settle):
    fake = slack_env
    portal = app.test_client()
    assert portal.get("/slack/link").status_code == 302  # sign-in first
    _login(portal, "erin@example.com")
    assert portal.post("/slack/link", data={}).status_code == 400  # CSRF as everywhere
    code = _make_code(portal)
    with session_scope() as s:  # only a hash is kept
        assert code.replace("-", "") not in str([r.code_hash for r in s.scalars(select(SlackLinkCode))])
    assert "not linked" in _command_text(client, "whoami", "U_ERIN_SLACK")
    text = _command_text(client, f"link {code.lower()}", "U_ERIN_SLACK")  # case and dash do not matter
    assert "erin@example.com" in text
    assert _slack_id("erin@example.com") == "U_ERIN_SLACK"
    entry = _audit("slack.link")[-1]
    assert entry.actor == "erin@example.com" and entry.data["method"] == "/airlock link"
    assert entry.data["slack_user_id"] == "U_ERIN_SLACK"
    # One use only, by anyone.
    assert "unknown, used or expired" in _command_text(client, f"link {code}", "U_MALLORY")
    assert _slack_id("erin@example.com") == "U_ERIN_SLACK"
    assert _audit("slack.link_refused")[-1].actor == "slack:U_MALLORY"
    assert "U_ERIN_SLACK" in portal.get("/slack/link").get_data(as_text=True)
    # A click of the newly linked user counts, with no profile lookup.
    rid = sc.open_review()
    channel, ts, message = _posted(fake, settle, rid)
    sc.post_payload(client, sc.click(message, "airlock.approve", user="U_ERIN_SLACK", channel=channel, ts=ts))
    settle(lambda: _votes(rid), what="the vote")
    assert _votes(rid) == [("erin@example.com", "approve", None, "slack")]
    assert fake.calls_of("users.info") == []


def test_wrong_and_expired_codes_do_not_link(app, client, slack_env):
    portal = app.test_client()
    _login(portal, "erin@example.com")
    code = _make_code(portal)
    assert "unknown, used or expired" in _command_text(client, "link ABCDE-FGHJK", "U_GUESS")
    with session_scope() as s:
        s.execute(update(SlackLinkCode).values(expires_at=utcnow()))
    assert "unknown, used or expired" in _command_text(client, f"link {code}", "U_ERIN_SLACK")
    assert _slack_id("erin@example.com") is None
    assert [e.actor for e in _audit("slack.link_refused")] == ["slack:U_GUESS", "slack:U_ERIN_SLACK"]
    # A newer code replaces an older unused one.
    first, second = _make_code(portal), _make_code(portal)
    assert "unknown, used or expired" in _command_text(client, f"link {first}", "U_ERIN_SLACK")
    assert "erin@example.com" in _command_text(client, f"link {second}", "U_ERIN_SLACK")
    assert "sign in" in _command_text(client, "link", "U_X").lower()


def test_a_link_moves_the_slack_user_and_both_sides_can_unlink(app, client, slack_env):
    portal = app.test_client()
    _login(portal, "erin@example.com")
    code = _make_code(portal)
    # U_DAVE (linked to dave) runs erin's code: the Slack user now belongs to erin, not dave.
    _command_text(client, f"link {code}", "U_DAVE")
    assert (_slack_id("erin@example.com"), _slack_id("dave@example.com")) == ("U_DAVE", None)
    assert _audit("slack.link")[-1].data["unlinked_users"] == ["dave@example.com"]
    assert "erin@example.com" in _command_text(client, "unlink", "U_DAVE")
    assert _slack_id("erin@example.com") is None
    _command_text(client, f"link {_make_code(portal)}", "U_ERIN_SLACK")
    resp = portal.post("/slack/unlink", data={"csrf_token": _csrf(portal, "/slack/link")})
    assert resp.status_code == 302 and _slack_id("erin@example.com") is None
    assert _audit("slack.unlink")[-1].actor == "erin@example.com"
    assert "/airlock link CODE" in _command_text(client, "help", "U_DAVE")
