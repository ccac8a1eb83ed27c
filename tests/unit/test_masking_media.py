"""Bodies under a mask that detectors cannot read (app/masking/media.py): the decision is
pure, and the HTTP code that asks it does not import the store."""
from __future__ import annotations

import subprocess
import sys

from app.masking.media import BINARY_MESSAGE, body_plan, is_binary, message_plan
from app.types import MaskSpec

EMAIL = MaskSpec(detectors=("email",), rule="mask-email")
PNG_OK = MaskSpec(detectors=("email",), rule="png-ok", unmasked_types=("image/png", "image/x-*"))


def test_readable_media_are_masked_and_unmasked_responses_only_scrubbed():
    assert body_plan((EMAIL,), "application/json; charset=utf-8").action == "mask"
    assert body_plan((EMAIL,), "text/html").action == "mask"
    assert body_plan((EMAIL,), None).action == "mask"  # no type: read as text, never passed as binary
    assert body_plan((), "image/png").action == "scrub"  # nothing to mask: credentials only


def test_binary_media_under_a_mask_are_refused_unless_every_mask_rule_lets_them_through():
    refused = body_plan((EMAIL,), "image/gif")
    assert refused.action == "refuse" and "image/gif" in refused.reason and "unmasked_types" in refused.reason
    assert body_plan((PNG_OK,), "IMAGE/PNG; x=1").action == "scrub"
    assert body_plan((PNG_OK,), "image/x-icon").action == "scrub"
    assert body_plan((PNG_OK,), "image/gif").action == "refuse"
    assert body_plan((PNG_OK, EMAIL), "image/png").action == "refuse"  # one rule that does not: refused
    assert body_plan((EMAIL,), "application/pdf").action == "refuse"


def test_binary_websocket_messages_under_a_mask_are_dropped_unless_let_through():
    assert message_plan((EMAIL,), True).action == "mask"
    assert message_plan((), False).action == "scrub"
    assert message_plan((EMAIL,), False).action == "refuse"
    bytes_ok = MaskSpec(detectors=("email",), rule="bytes-ok", unmasked_types=(BINARY_MESSAGE,))
    assert message_plan((bytes_ok,), False).action == "scrub"


def test_what_counts_as_binary():
    assert all(is_binary(t) for t in ("image/png", "audio/ogg", "video/mp4", "font/woff2", "application/zip",
                                      "application/pdf; q=1"))
    assert not any(is_binary(t) for t in ("application/json", "text/plain", "application/octet-stream", None))


def test_the_http_translation_redaction_and_media_decisions_do_not_import_the_store():
    code = ("import sys, app.http.operation, app.redaction, app.masking.media\n"
            "bad = sorted(m for m in sys.modules if m in ('app.db', 'app.models', 'app.audit', 'sqlalchemy',"
            " 'app.gate', 'mitmproxy'))\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
