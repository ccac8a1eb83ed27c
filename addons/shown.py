"""An HTTP request as a reviewer reads it: the headers that matter and the body.

Only for people: nothing here takes part in a decision (the binding covers the exact
request). Secrets are redacted the way the audit log redacts them.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qsl

from app import redaction
from app.http.operation import is_json, media_type

BODY_LIMIT = 8000
HEADER_LIMIT = 30
# Transport noise: a reviewer learns nothing from these about what the request does.
_NOISE = {"host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "accept-encoding",
          "proxy-connection", "content-length"}
_SECRET = {"authorization", "proxy-authorization", "cookie", "set-cookie"}
REASON_HEADER = "x-airlock-reason"


def headers(items: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in items:
        low = name.lower()
        if low in _NOISE:
            continue
        shown = redaction.REDACTED if low in _SECRET else redaction.scrub({name: value})[name]
        out.append((name, str(shown)[:300]))
    return tuple(out[:HEADER_LIMIT])


def body(content_type: str | None, raw: bytes | None, parsed: object | None) -> str:
    if not raw:
        return ""
    media = media_type(content_type)
    if is_json(content_type) and parsed is not None:
        text = json.dumps(redaction.scrub(parsed), indent=2, ensure_ascii=False)
    elif media == "application/x-www-form-urlencoded":
        try:
            fields = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return f"binary, {len(raw)} bytes ({media})"
        text = "\n".join(f"{k} = {redaction.scrub({k: v})[k]}" for k, v in fields)
    elif media.startswith("text/") or media in ("application/xml", "application/graphql"):
        try:
            text = redaction.scrub(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return f"binary, {len(raw)} bytes ({media})"
    else:
        return f"binary, {len(raw)} bytes ({media or 'no content type'})"
    if len(text) > BODY_LIMIT:
        text = text[:BODY_LIMIT] + f"\n… cut here: the body is {len(raw)} bytes"
    return text


def reason(items: list[tuple[str, str]]) -> str:
    return " ".join(v.strip() for k, v in items if k.lower() == REASON_HEADER)[:1000]
