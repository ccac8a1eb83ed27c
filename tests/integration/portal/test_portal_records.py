"""Audit search, chain status and export; session lists, replay pages and odd recordings."""
from __future__ import annotations

import csv
import io
import json

from sqlalchemy import select, update

from app import audit
from app.db import session_scope
from app.models import AuditEntry, RecordedSession, SessionEvent
from app.recording import recorder
from tests.integration.portal.scenario import XSS, seed_audit


def test_audit_search_and_keyset_pages(browser_for):
    seed_audit(130)
    b = browser_for("carol@example.com")
    first = b.get("/audit").get_data(as_text=True)
    assert first.count('<tr data-row') == 50
    import re

    nxt = re.search(r'href="([^"]*before=\d+)"[^>]*rel="next"', first).group(1).replace("&amp;", "&")
    second = b.get(nxt).get_data(as_text=True)
    seqs1 = [int(x) for x in re.findall(r'<td class="num mono">(\d+)</td>', first)]
    seqs2 = [int(x) for x in re.findall(r'<td class="num mono">(\d+)</td>', second)]
    assert seqs1 == sorted(seqs1, reverse=True) and max(seqs2) == min(seqs1) - 1 and len(seqs2) == 50
    by_action = b.get("/audit?action=decision.deny").get_data(as_text=True)
    assert "decision.deny" in by_action and "session.open</span>" not in by_action
    prefix = b.get("/audit?action=review").get_data(as_text=True)
    assert "review.create" in prefix and "decision.deny</span>" not in prefix
    text = b.get("/audit?q=DELETE+FROM+t7").get_data(as_text=True)
    assert "DELETE FROM t7" in text and "DELETE FROM t8\"" not in text
    assert b.get("/audit?since=yesterday").status_code == 400
    # LIKE wildcards in the search are literal characters, not patterns.
    assert "No entries match" in b.get("/audit?q=%25%25%25_").get_data(as_text=True)


def test_chain_verification_reports_tampering(browser_for):
    b = browser_for("carol@example.com")
    assert "Not verified" in b.get("/audit").get_data(as_text=True)
    b.post("/audit/verify")
    assert "Chain intact" in b.get("/audit").get_data(as_text=True)
    with session_scope() as s:
        s.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(actor="mallory"))
    b.post("/audit/verify")
    page = b.get("/audit").get_data(as_text=True)
    assert "Chain BROKEN at entry 3" in page


def test_exports_match_the_cli_and_escape_formulas(browser_for):
    with session_scope() as s:
        audit.append(s, "=HYPERLINK(\"http://evil\")", "user.login", "+cmd", {"note": "@SUM(1)"})
    b = browser_for("carol@example.com")
    jsonl = b.get("/audit/export.jsonl").get_data(as_text=True)
    with session_scope() as s:
        out = io.StringIO()
        audit.export(s, out)
    cli = out.getvalue()
    assert jsonl == cli[: len(jsonl)] and len(jsonl.splitlines()) == len(cli.splitlines())
    rows = list(csv.reader(io.StringIO(b.get("/audit/export.csv").get_data(as_text=True))))
    assert rows[0] == ["seq", "ts", "actor", "action", "target", "data", "prev_hash", "hash"]
    evil = next(r for r in rows if "HYPERLINK" in r[2])
    assert evil[2].startswith("'=") and evil[4] == "'+cmd"
    assert len(rows) - 1 == len(cli.splitlines()) + 1  # plus the entry that records this export
    filtered = b.get("/audit/export.jsonl?action=policy.apply").get_data(as_text=True).splitlines()
    assert [json.loads(line)["action"] for line in filtered] == ["policy.apply"]
    with session_scope() as s:
        exports = s.scalars(select(AuditEntry).where(AuditEntry.action == "audit.export")).all()
    assert [e.target for e in exports] == ["jsonl", "csv", "jsonl"]
    assert b.get("/audit/export.csv?since=abc").status_code == 400


def test_approvers_cannot_read_the_audit_log_or_export_it(browser_for):
    b = browser_for("bob@example.com")
    for path in ("/audit", "/audit/export.jsonl", "/audit/export.csv"):
        assert b.get(path).status_code == 403


def test_session_list_filters_and_verdicts(browser_for, scenario):
    b = browser_for("bob@example.com")
    assert b.get("/sessions").get_data(as_text=True).count("<tr data-row") == 3
    assert b.get("/sessions?protocol=http").get_data(as_text=True).count("<tr data-row") == 1
    assert b.get("/sessions?verdict=masked").get_data(as_text=True).count("<tr data-row") == 1
    assert b.get("/sessions?verdict=held").get_data(as_text=True).count("<tr data-row") == 1
    assert b.get("/sessions?run_id=run-7f3a&connection=web-1").get_data(as_text=True).count("<tr data-row") == 1
    assert b.get("/sessions?until=2000-01-01").get_data(as_text=True).count("<tr data-row") == 0
    assert b.get("/sessions?verdict=sideways").status_code == 400
    assert b.get("/sessions/not-a-session").status_code == 404


def test_replay_pages_escape_everything_recorded(browser_for, scenario):
    b = browser_for("bob@example.com")
    for sid in (scenario.sql_session, scenario.http_session):
        html = b.get(f"/sessions/{sid}").get_data(as_text=True)
        assert "<script>window.__xss" not in html and "<img src=x" not in html
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    run = b.get("/runs/run-7f3a").get_data(as_text=True)
    assert "<script>window.__xss" not in run and "&lt;script&gt;" in run
    assert b.get("/runs/no-such-run").status_code == 404


def test_unknown_event_shapes_render_generically_and_escaped(browser_for):
    rec = recorder().open(protocol="mysql", connection="legacy-crm", service_account="support-bot")
    rec.event("input", "plain text, not JSON " + XSS)
    rec.event("output", {"weird": [1, {"deep": XSS}]})
    rec.event("notice", {"text": XSS})
    rec.close()
    ssh = recorder().open(protocol="ssh", connection="web-1", service_account="ci-deployer", meta={"width": "wide"})
    ssh.event("output", {"text": "hello " + XSS})
    ssh.event("resize", {"cols": 10})  # not the shape the exporter expects
    ssh.close()
    recorder().flush()
    b = browser_for("bob@example.com")
    html = b.get(f"/sessions/{rec.id}").get_data(as_text=True)
    assert html.count("&lt;script&gt;") >= 3 and "<script>window" not in html
    cast = b.get(f"/sessions/{ssh.id}.cast")
    assert cast.status_code == 200
    lines = cast.get_data(as_text=True).splitlines()
    assert json.loads(lines[0])["width"] == 80 and json.loads(lines[1])[2].startswith("hello <script>")
    assert cast.headers["Content-Type"].startswith("application/x-asciicast")


def test_session_detail_survives_a_long_recording(browser_for):
    with session_scope() as s:
        s.add(RecordedSession(id="long-1", protocol="postgres", connection="billing-db", service_account="etl"))
        s.flush()
        s.add_all([SessionEvent(session_id="long-1", seq=i + 1, t=i * 0.001, kind="input",
                                data=json.dumps({"statement": f"SELECT {i}"})) for i in range(5100)])
    b = browser_for("bob@example.com")
    resp = b.get("/sessions/long-1")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200, html[-3000:]
    assert "first 5000 events are shown" in html and "SELECT 5000" not in html
    assert html.count('class="exchange"') == 5000
