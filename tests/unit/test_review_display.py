"""What reviewers read: the formatter never changes a token, the request as people read it."""
from addons import shown
from app.risk import risk_why
from app.portal.present import pretty_sql


def test_for_update_stays_one_clause():
    assert pretty_sql("SELECT * FROM invoices WHERE id = 1 FOR UPDATE").splitlines()[-1] == "FOR UPDATE"
    out = pretty_sql("SELECT id FROM t WHERE a = 1 FOR NO KEY UPDATE SKIP LOCKED")
    assert out.splitlines()[-1] == "FOR NO KEY UPDATE SKIP LOCKED"


def test_the_layout_never_touches_a_literal():
    text = "SELECT 'for\n   update' FROM t WHERE a = 1"
    out = pretty_sql(text)
    assert "'for\n   update'" in out


def test_form_fields_and_secrets():
    raw = b"amount=12&password=hunter2&note=hi"
    text = shown.body("application/x-www-form-urlencoded", raw, None)
    assert "amount = 12" in text and "note = hi" in text and "hunter2" not in text


def test_headers_drop_noise_and_redact_credentials():
    out = dict(shown.headers([("Host", "x"), ("Authorization", "Bearer abc"), ("Cookie", "s=1"),
                              ("X-Request-Id", "r1"), ("Accept-Encoding", "gzip")]))
    assert out == {"Authorization": "[redacted]", "Cookie": "[redacted]", "X-Request-Id": "r1"}


def test_text_and_long_bodies():
    assert shown.body("image/png", b"\x89PNG", None) == "binary, 4 bytes (image/png)"
    long = shown.body("text/plain", b"a" * 20_000, None)
    assert long.endswith("the body is 20000 bytes") and len(long) < 8_100


def test_risk_is_explained():
    assert risk_why("write", ["unbounded"], "postgres") == ["it changes data",
                                                            "it has no WHERE clause, so it touches every row"]
    assert risk_why("read", [], "postgres") == ["it only reads"]
