"""addons.recording's cheap pre-check must never let through what app.audit would redact."""
from __future__ import annotations

from hypothesis import given, strategies as st

from addons.recording import suspect
from app import audit

SECRETS = [
    "Authorization: Bearer abc123def456", "basic dXNlcjpwYXNz1", "alk_abcdefghijklmnopqrstuvwxyz",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "ALTER USER x PASSWORD 'hunter2'",
    "CREATE USER a IDENTIFIED BY 'pw'", "postgres://user:pw@db/x",
]


def test_every_secret_key_part_and_value_pattern_is_suspect():
    for part in audit._SECRET_KEY_PARTS:
        assert suspect(part) and suspect(part.upper())
    for text in SECRETS:
        assert audit.scrub(text) != text, text  # the sample really is something audit redacts
        assert suspect(text)


@given(st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABKLPTY _:/@.-'=0123456789\n")),
               max_size=60))
def test_text_audit_would_change_is_always_suspect(text):
    if audit.scrub(text) != text:
        assert suspect(text)
    if audit.scrub({text: "value"}) != {text: "value"}:
        assert suspect(text)
