"""Item 7 of issue 20: "masked" is shown only where values were actually masked.

A mask rule that applied and found nothing is shown as an allowed operation with a note
("mask rule … applied, nothing masked"), on every page that labels operations: the
session replay (SQL and HTTP), the run timeline, a review's context, the session list's
verdict filter and the API.
"""
from __future__ import annotations

import html as markup
import re

import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import User
from app.portal.security import new_api_token
from tests.integration.portal.held import decide, sql_op
from tests.integration.portal.masked import RUN, SQL_MASKED, SQL_NOTHING, URL_MASKED, URL_NOTHING, seed_masked


def _text(html: str) -> str:
    return markup.unescape(" ".join(re.sub(r"<[^>]+>", " ", html).split()))


def _article(html: str, needle: str) -> str:
    """The replay step (an <article class="exchange">) that shows `needle`."""
    [found] = [a for a in re.findall(r'<article class="exchange".*?</article>', html, re.S) if needle in a]
    return found


def test_sql_replay_labels_only_the_statement_whose_values_were_masked(browser_for):
    m = seed_masked()
    html = browser_for("bob@example.com").get(f"/sessions/{m.sql_session}").get_data(as_text=True)
    masked, nothing = _article(html, "email"), _article(html, "total")
    assert 'class="verdict v-masked" data-masked="2">2 values masked<' in masked
    assert "masked by mask-pii" in _text(masked)
    assert "v-masked" not in nothing and 'class="verdict v-allow">allow<' in nothing
    assert "mask rule mask-pii applied, nothing masked" in _text(nothing)


def test_http_replay_labels_only_the_exchange_whose_values_were_masked(browser_for):
    m = seed_masked()
    html = browser_for("bob@example.com").get(f"/sessions/{m.http_session}").get_data(as_text=True)
    masked, nothing = _article(html, URL_MASKED), _article(html, URL_NOTHING)
    assert ">1 value masked<" in masked and "v-masked" in masked
    assert "v-masked" not in nothing and "v-allow" in nothing
    assert "mask rule mask-pii applied, nothing masked" in _text(nothing)


def test_run_timeline_shows_masked_counts_on_answers_not_on_decisions(browser_for):
    seed_masked()
    html = browser_for("bob@example.com").get(f"/runs/{RUN}").get_data(as_text=True)
    items = re.findall(r"<li class=\"k-(\w+)\">(.*?)</li>", html, re.S)
    labelled = [(kind, _text(body)) for kind, body in items if "v-masked" in body]
    assert len(labelled) == 2 and all(kind == "output" for kind, _ in labelled)
    assert any("2 values masked" in text and "SELECT id, email, note" in text for _, text in labelled)
    assert any("→ 200 · 1 value masked" in text for _, text in labelled)
    assert not any("v-masked" in body for kind, body in items if kind == "decision")


def test_review_context_counts_masked_values_of_earlier_steps(browser_for):
    seed_masked()
    verdict = decide(sql_op("UPDATE invoices SET note = 'x' WHERE id = 1"), hold=0, run_id=RUN)
    html = browser_for("alice@example.com").get(f"/reviews/{verdict.review_id}").get_data(as_text=True)
    steps = re.search(r'id="run-steps".*?</section>', html, re.S).group(0)
    rows = {_text(r) for r in re.findall(r"<tr>.*?</tr>", steps, re.S)}
    assert any(SQL_MASKED in r and "2 values masked" in r for r in rows)
    assert any(f"GET {URL_MASKED}" in r and "1 value masked" in r for r in rows)
    assert any(SQL_NOTHING in r and "masked" not in r and "allow" in r for r in rows)
    assert any(f"GET {URL_NOTHING}" in r and "masked" not in r for r in rows)


@pytest.fixture
def api_token(scenario) -> str:
    with session_scope() as s:
        user = s.scalars(select(User).where(User.email == "carol@example.com")).one()
        token, digest = new_api_token()
        user.api_token_hash = digest
    return token


def test_the_masked_filter_and_the_api_count_values_not_rules(browser_for, app, api_token):
    m = seed_masked()
    listed = browser_for("bob@example.com").get("/sessions?verdict=masked").get_data(as_text=True)
    assert m.sql_session in listed and m.http_session in listed
    assert m.plain_session not in listed  # its mask rules applied and found nothing
    client = app.test_client()

    def masked_values(sid: str) -> int:
        resp = client.get(f"/api/v1/sessions/{sid}", headers={"Authorization": f"Bearer {api_token}"})
        assert resp.status_code == 200
        return resp.get_json()["masked_values"]

    assert [masked_values(x) for x in (m.plain_session, m.sql_session, m.http_session)] == [0, 2, 1]
    masked = client.get("/api/v1/sessions?verdict=masked", headers={"Authorization": f"Bearer {api_token}"})
    ids = {x["id"] for x in masked.get_json()["items"]}
    assert m.sql_session in ids and m.http_session in ids and m.plain_session not in ids
