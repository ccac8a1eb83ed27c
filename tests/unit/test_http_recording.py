"""addons.recording's cheap pre-check must never let through what app.redaction (the audit log's scrubber) would redact."""
from __future__ import annotations

from hypothesis import given, strategies as st

from addons.recording import suspect
from app import redaction

SECRETS = [
    "Authorization: Bearer abc123def456", "basic dXNlcjpwYXNz1", "alk_abcdefghijklmnopqrstuvwxyz",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "ALTER USER x PASSWORD 'hunter2'",
    "CREATE USER a IDENTIFIED BY 'pw'", "postgres://user:pw@db/x",
]


def test_every_secret_key_part_and_value_pattern_is_suspect():
    for part in redaction._SECRET_KEY_PARTS:
        assert suspect(part) and suspect(part.upper())
    for text in SECRETS:
        assert redaction.scrub(text) != text, text  # the sample really is something the audit log redacts
        assert suspect(text)


@given(st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABKLPTY _:/@.-'=0123456789\n")),
               max_size=60))
def test_text_redaction_would_change_is_always_suspect(text):
    if redaction.scrub(text) != text:
        assert suspect(text)
    if redaction.scrub({text: "value"}) != {text: "value"}:
        assert suspect(text)
