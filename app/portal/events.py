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


def masked_count(output: dict[str, Any] | None) -> int:
    """How many values masking actually replaced in an answer: its output's "masked"
    (each result's, for a MySQL answer of several). A mask rule that applied and found
    nothing counts 0: a decision names the rules that apply, never what they did."""
    if not output:
        return 0
    results = output.get("results")
    if isinstance(results, list) and results:
        return sum(_count(r.get("masked")) for r in results if isinstance(r, dict))
    return _count(output.get("masked"))


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def mask_rules(decision: dict[str, Any] | None, output: dict[str, Any] | None = None) -> list[str]:
    """The mask rules that applied ("masked" is how older decisions named them)."""
    for data, key in ((output, "masks"), (decision, "masks"), (decision, "masked")):
        rules = (data or {}).get(key)
        if isinstance(rules, list) and rules:
            return [str(r) for r in rules]
    return []


def verdict_of(decision: dict[str, Any] | None, masked: int = 0) -> str:
    """allow / deny / held / masked / error, for a badge. "masked" only with `masked`
    values actually replaced (masked_count of the answer), never for a rule alone."""
    if not decision:
        return "masked" if masked else ""
    if decision.get("status") == "error":
        return "error"
    if decision.get("review_id") is not None:
        return "held-" + ("allow" if decision.get("action") == "allow" else "deny" if decision.get("action") == "deny" else "pending")
    action = str(decision.get("action") or "")
    return "masked" if masked and action == "allow" else action


def masked_label(n: int) -> str:
    return f"{n} value{'s' if n != 1 else ''} masked"


@dataclass
class Step:
    """One exchange (HTTP) or statement (SQL): request, the gate's decision, the answer."""

    t: float
    request: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    other: list[Event] = field(default_factory=list)

    @property
    def masked(self) -> int:
        """Values actually masked in the answer (0 when a mask rule found nothing)."""
        return masked_count(self.response)

    @property
    def verdict(self) -> str:
        return verdict_of(self.decision, self.masked)

    @property
    def mask_rules(self) -> list[str]:
        return mask_rules(self.decision, self.response)


def _request_text(request: dict[str, Any]) -> str:
    return statement_of(request) or str(request.get("url") or "")


def same_operation(decision: dict[str, Any], text: str) -> bool:
    op, text = str(decision.get("operation") or "").strip(), text.strip()
    return bool(op and text) and (op == text or op in text or text in op)


def flow_of(data: dict[str, Any] | None) -> str | None:
    """The HTTP exchange an event belongs to ("flow": the proxy's flow id), if it names one.

    The proxy writes it on the request, the answer and, since HTTP/2 made concurrent
    exchanges on one connection common, the gate's decision too. Older recordings have
    it on requests and answers only: their decisions pair by order, as they always did."""
    flow = (data or {}).get("flow")
    return flow if isinstance(flow, str) and flow else None


def decision_for(answer: dict[str, Any], earlier: list[tuple[int, dict[str, Any]]]) -> int | None:
    """Which of the decisions recorded before an answer in its session, as (seq, data),
    the answer belongs to: its seq, or None when none can be told.

    - An answer naming its flow belongs to the decision of that flow, and to no other.
      Concurrent HTTP/2 streams interleave, so "the latest decision before it" may be
      another stream's.
    - Otherwise (SQL, or a recording from before decisions named their flow) it belongs
      to the latest decision before it that names no flow: of the same statement, when
      the answer names one. A decision naming a flow is never another exchange's."""
    flow = flow_of(answer)
    if flow is not None:
        own = [seq for seq, decision in earlier if flow_of(decision) == flow]
        if own:
            return max(own)
    text = statement_of(answer)
    candidates = [seq for seq, decision in earlier
                  if flow_of(decision) is None and (not text or same_operation(decision, text))]
    return max(candidates) if candidates else None


def _step_of_flow(out: list[Step], flow: str, undecided: bool = False) -> Step | None:
    """The first open step of an exchange (its request or its decision names the flow),
    or of those the first still `undecided`. First: a WebSocket's messages share a flow."""
    for step in out:
        if step.response is None and flow in (flow_of(step.request), flow_of(step.decision)) \
                and not (undecided and step.decision is not None):
            return step
    return None


def _attach_decision(out: list[Step], ev: Event) -> None:
    """A decision joins its own exchange when it names its flow; otherwise (SQL, older
    recordings) the request it directly follows."""
    data = ev.as_dict
    flow = flow_of(data)
    if flow is not None:
        step = _step_of_flow(out, flow, undecided=True)
        if step is not None:
            step.decision = data
        else:
            out.append(Step(t=ev.t, decision=data))
        return
    last = out[-1] if out else None
    if last is not None and last.request is not None and last.decision is None and last.response is None:
        last.decision = data
    else:
        out.append(Step(t=ev.t, decision=data))


def _attach_output(out: list[Step], ev: Event) -> None:
    """An answer goes to its request: same HTTP flow, or same SQL text, else the latest open step."""
    data = ev.as_dict
    open_steps = [s for s in out if s.response is None]
    flow = flow_of(data)
    text = statement_of(data)
    if flow is not None:
        step = _step_of_flow(out, flow)
        if step is not None:
            step.response = data
            return
    if flow is None and text:
        for step in open_steps:
            if step.decision is not None and same_operation(step.decision, text):
                step.response = data
                return
    if open_steps and flow is None:
        open_steps[-1].response = data
    else:
        out.append(Step(t=ev.t, response=data))


def steps(events: list[Event]) -> tuple[list[Step], list[Event]]:
    """Pair input / decision / output events. Returns the steps and the events left over.

    Adapters differ: the HTTP proxy records request, decision and response, each naming
    its flow (several may be in flight on one HTTP/2 connection), the PostgreSQL relay one
    output per statement after the gate's decisions, and a refusal may come with no
    request at all. A decision joins the request of its flow, or (naming none) the
    request it directly precedes or follows when they name the same operation; an answer
    joins its request.
    """
    out: list[Step] = []
    loose: list[Event] = []
    for ev in events:
        data = ev.as_dict
        last = out[-1] if out else None
        if ev.kind == "input" and data:
            if last is not None and last.request is None and last.response is None and last.decision \
                    and flow_of(last.decision) in (None, flow_of(data)) \
                    and same_operation(last.decision, _request_text(data)):
                last.request = data
            else:
                out.append(Step(t=ev.t, request=data))
        elif ev.kind == "decision" and data:
            _attach_decision(out, ev)
        elif ev.kind == "output" and data:
            _attach_output(out, ev)
        else:
            loose.append(ev)
    return out, loose


def body_view(body: Any) -> tuple[str, str]:
    """(text, note) for a recorded HTTP body: {"json"}, {"text"}, {"omitted"} or anything."""
    if not body:  # also a template's Undefined
        return "", ""
    if isinstance(body, dict) and ("json" in body or "text" in body or "omitted" in body):
        size = body.get("bytes")
        if "omitted" in body:
            return "", f"{size} bytes, not recorded ({body['omitted']})"
        note = []
        if size is not None:
            note.append(f"{size} bytes")
        if body.get("truncated"):
            note.append("truncated")
        if body.get("streamed"):
            note.append("streamed")
        return clip(body.get("json") if "json" in body else body.get("text")), ", ".join(note)
    return clip(body), ""


def rows_preview(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """A table from an SQL result, whatever the adapter called its parts."""
    if not response:
        return None
    rows = next((response[k] for k in ("sample", "preview", "rows") if isinstance(response.get(k), list)), None)
    if rows is None:
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
    total = response.get("rows") if isinstance(response.get("rows"), int) else \
        response.get("row_count", response.get("rowcount", len(rows)))
    return {"columns": cols, "rows": body, "total": total, "shown": len(body)}


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 500 else text[:500] + "…"


def statement_of(data: dict[str, Any] | None) -> str:
    """The SQL text of an event ("statement" is the prepared statement's name for the relay)."""
    if not data:
        return ""
    for key in ("sql", "query", "text"):
        if isinstance(data.get(key), str):
            return data[key]
    value = data.get("statement")
    return value if isinstance(value, str) and " " in value.strip() else ""


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
            return f"→ {d.get('status', '')}" + _masked_suffix(d)
    if protocol in ("postgres", "mysql"):
        if ev.kind == "input":
            return statement_of(d) or clip(ev.data, 200)
        if ev.kind == "output":
            # The statement itself, not only its command tag: "→ UPDATE 1" says nothing of which rows.
            sql = statement_of(d)
            lead = f"{sql[:300]} " if sql else ""
            if isinstance(d.get("error"), dict):
                return f"{lead}→ error {d['error'].get('code') or ''} {d['error'].get('message') or ''}".strip()
            if d.get("tag"):
                return (f"{lead}→ {d['tag']}" + (f" ({d.get('ms')} ms)" if d.get("ms") is not None else "")
                        + _masked_suffix(d))
            preview = rows_preview(d)
            return f"→ {preview['total']} rows" + _masked_suffix(d) if preview else clip(ev.data, 200)
    if isinstance(ev.data, dict) and isinstance(ev.data.get("text"), str):
        return plain(ev.data["text"])[:200]
    return clip(ev.data, 200)


def _masked_suffix(output: dict[str, Any]) -> str:
    n = masked_count(output)
    return f" · {masked_label(n)}" if n else ""


def absolute(started: datetime, t: float) -> datetime:
    return started + timedelta(seconds=t)
