"""Recorded events -> what a replay page shows, per protocol.

The adapters that write these events are built separately, so nothing here trusts a
shape: known shapes get a tailored view, anything else is shown as escaped JSON.
Nothing produced here is ever marked safe for HTML.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

MAX_BODY = 64 * 1024
PREVIEW_ROWS = 20


@dataclass
class Event:
    seq: int
    t: float
    kind: str
    data: Any  # parsed JSON, or the raw text when it is not JSON

    @property
    def as_dict(self) -> dict[str, Any]:
        return self.data if isinstance(self.data, dict) else {}


def parse(rows) -> list[Event]:
    out = []
    # Plain tuples: a Row's `t` would clash with Row.t, the tuple accessor.
    for seq, t, kind, raw in (tuple(r) for r in rows):
        try:
            data = json.loads(raw)
        except (TypeError, ValueError):
            data = raw
        out.append(Event(seq=seq, t=t, kind=kind, data=data))
    return out


def clip(text: Any, limit: int = MAX_BODY) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        text = json.dumps(text, indent=2, ensure_ascii=False, default=str)
    else:
        try:  # a JSON body reads better indented
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False) if text[:1] in "{[" else text
        except ValueError:
            pass
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


def header_pairs(headers: Any) -> list[tuple[str, str]]:
    if isinstance(headers, dict):
        return [(str(k), str(v)) for k, v in headers.items()]
    if isinstance(headers, list):
        out = []
        for item in headers:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                out.append((str(item[0]), str(item[1])))
        return out
    return []


def verdict_of(decision: dict[str, Any] | None) -> str:
    """allow / deny / held / masked / error, for a badge."""
    if not decision:
        return ""
    if decision.get("status") == "error":
        return "error"
    if decision.get("review_id") is not None:
        return "held-" + ("allow" if decision.get("action") == "allow" else "deny" if decision.get("action") == "deny" else "pending")
    if decision.get("masked"):
        return "masked"
    return str(decision.get("action") or "")


@dataclass
class Step:
    """One exchange (HTTP) or statement (SQL): request, the gate's decision, the answer."""

    t: float
    request: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    other: list[Event] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return verdict_of(self.decision)


def steps(events: list[Event]) -> tuple[list[Step], list[Event]]:
    """Pair input / decision / output events. Returns the steps and the events left over."""
    out: list[Step] = []
    loose: list[Event] = []
    early_decision: Event | None = None
    current: Step | None = None
    for ev in events:
        data = ev.as_dict
        if ev.kind == "input" and data:
            current = Step(t=ev.t, request=data)
            if early_decision is not None:
                current.decision, early_decision = early_decision.as_dict, None
            out.append(current)
        elif ev.kind == "decision" and data:
            if current is not None and current.decision is None and current.response is None:
                current.decision = data
            else:
                # Decided before its request was recorded, or a refusal with no request event.
                if early_decision is not None:
                    out.append(Step(t=early_decision.t, decision=early_decision.as_dict))
                early_decision = ev
        elif ev.kind == "output" and data and current is not None and current.response is None:
            current.response = data
        else:
            loose.append(ev)
    if early_decision is not None:
        out.append(Step(t=early_decision.t, decision=early_decision.as_dict))
    out.sort(key=lambda s: s.t)
    return out, loose


def rows_preview(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """A table from an SQL result, whatever the adapter called its parts."""
    if not response:
        return None
    rows = response.get("rows")
    if rows is None:
        rows = response.get("preview")
    if not isinstance(rows, list):
        return None
    columns = response.get("columns") or response.get("fields")
    cols: list[str] = []
    if isinstance(columns, list):
        cols = [str(c.get("name") if isinstance(c, dict) else c) for c in columns]
    body: list[list[str]] = []
    for row in rows[:PREVIEW_ROWS]:
        if isinstance(row, dict):
            if not cols:
                cols = [str(k) for k in row]
            body.append([_cell(row.get(c)) for c in cols])
        elif isinstance(row, (list, tuple)):
            body.append([_cell(v) for v in row])
        else:
            body.append([_cell(row)])
    total = response.get("row_count", response.get("rowcount", len(rows)))
    return {"columns": cols, "rows": body, "total": total, "shown": len(body)}


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 500 else text[:500] + "…"


def statement_of(request: dict[str, Any] | None) -> str:
    if not request:
        return ""
    for key in ("statement", "sql", "query", "text"):
        if isinstance(request.get(key), str):
            return request[key]
    return ""


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\\\)|[\x00-\x08\x0b-\x1f\x7f]")


def plain(text: str) -> str:
    """Terminal text without escape sequences and control characters (display only)."""
    return ANSI.sub("", text.replace("\r\n", " ").replace("\n", " "))


def summary(protocol: str, ev: Event) -> str:
    """One line for the run timeline."""
    d = ev.as_dict
    if ev.kind == "decision":
        op = d.get("operation") or ""
        return f"{str(d.get('action', '')).upper()} {d.get('rule') or ''} {op}".strip()
    if protocol == "http":
        if ev.kind == "input":
            return f"{d.get('method', '')} {d.get('url', '')}".strip() or clip(ev.data, 200)
        if ev.kind == "output":
            return f"→ {d.get('status', '')}"
    if protocol in ("postgres", "mysql"):
        if ev.kind == "input":
            return statement_of(d) or clip(ev.data, 200)
        if ev.kind == "output":
            preview = rows_preview(d)
            return f"→ {preview['total']} rows" if preview else clip(ev.data, 200)
    if isinstance(ev.data, dict) and isinstance(ev.data.get("text"), str):
        return plain(ev.data["text"])[:200]
    return clip(ev.data, 200)


def absolute(started: datetime, t: float) -> datetime:
    return started + timedelta(seconds=t)
