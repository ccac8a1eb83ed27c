"""Display helpers: SQL layout never changes a token; ANSI is stripped only for summaries."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from app.portal.events import Event, plain, rows_preview, steps, summary
from app.portal.present import pretty_sql


def test_pretty_sql_reindents_without_rewriting():
    out = pretty_sql("UPDATE invoices SET paid_at = now(), note = 'a  b' WHERE id = 7")
    assert out.splitlines()[0] == "UPDATE invoices" and "now()" in out and "'a  b'" in out
    assert "".join(out.split()) == "".join("UPDATE invoices SET paid_at = now(), note = 'a  b' WHERE id = 7".split())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("selctfrmwhinsupdaSELCT *,()'=;-\n\t0123456789_\"<>")), max_size=120))
def test_pretty_sql_only_ever_changes_whitespace(text):
    out = pretty_sql(text)
    assert "".join(out.split()) == "".join(text.split())


def test_event_pairing_and_previews():
    events = [
        Event(1, 0.0, "decision", {"action": "deny", "rule": "no-ddl", "operation": "DROP TABLE t"}),
        Event(2, 0.1, "input", {"statement": "SELECT 1"}),
        Event(3, 0.2, "decision", {"action": "allow", "masks": ["m"]}),
        Event(4, 0.3, "output", {"columns": [{"name": "a"}], "rows": [[1], [None]], "row_count": 2, "masked": 3}),
        Event(5, 0.4, "notice", {"text": "hi"}),
    ]
    out, loose = steps(events)
    assert [s.verdict for s in out] == ["deny", "masked"] and out[0].request is None
    assert out[1].masked == 3 and out[1].mask_rules == ["m"]
    assert out[1].request == {"statement": "SELECT 1"} and rows_preview(out[1].response)["rows"] == [["1"], ["NULL"]]
    assert [e.seq for e in loose] == [5]
    # Decision recorded first, then its request: they pair up.
    first, _ = steps([Event(1, 0, "decision", {"action": "allow", "operation": "SELECT 2"}),
                      Event(2, 0, "input", {"statement": "SELECT 2"}), Event(3, 0, "output", {"rows": []})])
    assert len(first) == 1 and first[0].request and first[0].decision and first[0].response == {"rows": []}


def test_terminal_summary_drops_escape_sequences():
    assert plain("\x1b[1;32mok\x1b[0m\r\nnext\x07") == "ok next"
    assert summary("ssh", Event(1, 0, "output", {"text": "\x1b[31mred\x1b[0m"})) == "red"
