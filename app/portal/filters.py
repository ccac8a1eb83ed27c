"""Jinja filters and helpers. None of them marks anything safe: output stays escaped."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from flask import request

from app.models import utcnow
from app.risk import risk


def ago(ts: datetime | None) -> str:
    if ts is None:
        return "never"
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    secs = (utcnow() - ts).total_seconds()
    future = secs < 0
    secs = abs(secs)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if secs >= size or unit == "s":
            text = f"{int(secs // size)}{unit}"
            return f"in {text}" if future else f"{text} ago"
    return ""


def when(ts: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if ts is None:
        return "—"
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime(fmt)


def iso(ts: datetime | None) -> str:
    if ts is None:
        return ""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat(timespec="seconds")


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def clock(seconds: float | None) -> str:
    """'0:14', '1h 05m': the countdowns' format, so the page reads the same before its script runs."""
    seconds = int(seconds or 0)
    if seconds <= 0:
        return "expired"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


def with_args(**changes: Any) -> str:
    """The current URL with some query arguments changed (None removes one)."""
    args = {k: v for k, v in request.args.items()}
    for key, value in changes.items():
        if value is None or value == "":
            args.pop(key, None)
        else:
            args[key] = str(value)
    return request.path + ("?" + urlencode(args) if args else "")


_TARGET = re.compile(r"^(review|session|grant|window):(.+)$")


def target_url(action: str, target: str, data: dict | None = None) -> str:
    """The page of the thing an audit entry names ('' when it has none)."""
    from flask import url_for

    m = _TARGET.match(target or "")
    if m and m.group(1) == "review" and m.group(2).isdigit():
        return url_for("reviews.detail", review_id=int(m.group(2)))
    if m and m.group(1) == "session":
        return url_for("sessions.detail", session_id=m.group(2))
    if (action or "").startswith("grant.") and "->" in (target or ""):
        return url_for("grants.index", show="all") + "#grant-" + target.replace("->", "--")
    session_id = (data or {}).get("session_id")
    if isinstance(session_id, str) and session_id:
        return url_for("sessions.detail", session_id=session_id)
    return ""


def register(app) -> None:
    app.jinja_env.filters.update(ago=ago, when=when, iso=iso, pretty_json=pretty_json, duration=duration,
                                  clock=clock)
    app.jinja_env.globals.update(risk=risk, with_args=with_args, target_url=target_url)
