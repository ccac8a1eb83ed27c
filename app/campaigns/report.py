"""Evidence for auditors: every item of a run, what the reviewer saw, what was decided."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from sqlalchemy.orm import Session

from app.campaigns.runs import CampaignError, get_campaign, latest_run
from app.models import CampaignRun

COLUMNS = ("campaign", "run_id", "run_started", "deadline", "item_id", "grant_id", "service_account", "connection",
           "reviewer", "escalated_from", "decision", "decided_by", "decided_at", "via", "justification",
           "suggestion", "suggestion_reason", "last_used", "sessions", "ops", "denials", "reviews",
           "deadline_outcome", "flagged")


def rows(run: CampaignRun) -> list[dict[str, Any]]:
    out = []
    for item in sorted(run.items, key=lambda i: i.id):
        u = item.usage or {}
        out.append({
            "campaign": run.campaign.name, "run_id": run.id, "run_started": run.started_at.isoformat(),
            "deadline": run.deadline.isoformat(), "item_id": item.id, "grant_id": item.grant_id,
            "service_account": item.service_account, "connection": item.connection, "reviewer": item.reviewer,
            "escalated_from": item.escalated_from or "", "decision": item.status, "decided_by": item.decided_by or "",
            "decided_at": item.decided_at.isoformat() if item.decided_at else "", "via": item.decided_via or "",
            "justification": item.justification, "suggestion": item.suggestion,
            "suggestion_reason": item.suggestion_reason, "last_used": u.get("last_used") or "",
            "sessions": u.get("sessions", 0), "ops": u.get("ops") or {}, "denials": u.get("denials", 0),
            "reviews": u.get("reviews") or {}, "deadline_outcome": item.deadline_outcome, "flagged": item.flagged,
        })
    return out


def run_for(s: Session, name: str, run_id: int | None = None) -> CampaignRun:
    campaign = get_campaign(s, name)
    run = s.get(CampaignRun, run_id) if run_id else latest_run(s, campaign)
    if run is None or run.campaign_id != campaign.id:
        raise CampaignError(f"campaign {name!r} has no run" + (f" {run_id}" if run_id else " yet"))
    return run


def render(run: CampaignRun, fmt: str) -> str:
    data = rows(run)
    if fmt == "json":
        return json.dumps({"campaign": run.campaign.name, "run_id": run.id, "status": run.status,
                           "started_at": run.started_at.isoformat(), "started_by": run.started_by,
                           "deadline": run.deadline.isoformat(),
                           "closed_at": run.closed_at.isoformat() if run.closed_at else None, "items": data},
                          indent=2, sort_keys=False)
    if fmt != "csv":
        raise CampaignError(f"unknown report format {fmt!r} (csv or json)")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in data:
        writer.writerow({k: _cell(json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in row.items()})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    # A justification typed as "=HYPERLINK(...)" must stay text when a spreadsheet opens the report.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
