"""Item 7 of issue 20 in Chromium: "N values masked" where values were masked, and an
allowed step with "mask rule … applied, nothing masked" where the rule found nothing,
for SQL and HTTP, on the replay, the run timeline and a review's context."""
from __future__ import annotations

from tests.browser.conftest import login, shot
from tests.integration.portal.held import decide, sql_op
from tests.integration.portal.masked import RUN, SQL_NOTHING, URL_MASKED, URL_NOTHING, seed_masked


def _step(page, text: str):
    """The replay step (article) showing `text`."""
    steps = page.locator("article.exchange").filter(has_text=text)
    assert steps.count() == 1, text
    return steps.first


def test_sql_replay_says_masked_only_where_values_were(page, scenario):
    m = seed_masked()
    login(page, "bob@example.com")
    page.goto(f"/sessions/{m.sql_session}")
    masked, nothing = _step(page, "email"), _step(page, "total")
    badge = masked.locator("header .verdict")
    assert badge.inner_text() == "2 values masked" and badge.get_attribute("class") == "verdict v-masked"
    assert "masked by mask-pii" in masked.inner_text()
    assert nothing.locator(".v-masked").count() == 0
    assert nothing.locator("header .verdict").inner_text() == "allow"
    assert nothing.locator(".mask-none").inner_text() == "mask rule mask-pii applied, nothing masked"
    assert nothing.locator(".mask-none").is_visible()
    shot(page, "masked-sql")


def test_http_replay_says_masked_only_where_values_were(page, scenario):
    m = seed_masked()
    login(page, "bob@example.com")
    page.goto(f"/sessions/{m.http_session}")
    masked, nothing = _step(page, URL_MASKED), _step(page, URL_NOTHING)
    assert masked.locator("header .verdict.v-masked").inner_text() == "1 value masked"
    assert nothing.locator(".v-masked").count() == 0
    assert nothing.locator("header .verdict").inner_text() == "allow"
    assert nothing.locator(".mask-none").inner_text() == "mask rule mask-pii applied, nothing masked"
    shot(page, "masked-http")


def test_run_timeline_and_review_context_count_masked_values(page, scenario):
    seed_masked()
    login(page, "alice@example.com")
    page.goto(f"/runs/{RUN}")
    labels = page.locator("#timeline .v-masked")
    assert sorted(labels.all_inner_texts()) == ["1 value masked", "2 values masked"]
    assert page.locator("#timeline li.k-decision .v-masked").count() == 0
    assert page.locator("#timeline li.k-decision .v-allow").count() == 4

    verdict = decide(sql_op("UPDATE invoices SET note = 'x' WHERE id = 1"), hold=0, run_id=RUN)
    page.goto(f"/reviews/{verdict.review_id}")
    rows = page.locator("#run-steps tr")
    assert rows.count() == 4
    by_op = {r.locator("td").nth(2).inner_text(): r.locator("td").nth(1).inner_text() for r in rows.all()}
    assert by_op[f"GET {URL_MASKED}"] == "1 value masked"
    assert by_op[f"GET {URL_NOTHING}"] == "allow"
    assert by_op[SQL_NOTHING] == "allow"
    assert sorted(by_op.values()) == ["1 value masked", "2 values masked", "allow", "allow"]
    shot(page, "masked-review-context")
