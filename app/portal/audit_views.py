"""The audit log: search, chain verification, export as JSON lines or CSV."""
from __future__ import annotations

import csv
import io
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, Response, flash, redirect, render_template, request, stream_with_context, url_for
from flask_login import current_user
from sqlalchemy import func, select

from app import audit
from app.config import settings
from app.db import session_scope
from app.models import AuditEntry, utcnow
from app.portal.queries import BadFilter, audit_filters, audit_query, list_audit, parse_seq
from app.portal.security import AUDIT, requires

bp = Blueprint("audit", __name__)
EXPORT_BATCH = 1000


@dataclass(frozen=True)
class ChainStatus:
    result: audit.VerifyResult
    at: datetime
    by: str
    seconds: float


# Verifying walks the whole chain (seconds at 100k entries), so it runs when asked and
# the last answer is shown until then. Kept per store URL, per process.
_last: dict[str, ChainStatus] = {}
_verify_lock = threading.Lock()


def last_status() -> ChainStatus | None:
    return _last.get(settings().database_url)


def run_verify(by: str) -> ChainStatus:
    with _verify_lock:
        started = time.monotonic()
        with session_scope() as s:
            result = audit.verify(s)
        status = ChainStatus(result, utcnow(), by, time.monotonic() - started)
        with session_scope() as s:
            audit.record_verification(s, by, result, status.seconds, via="portal")
        _last[settings().database_url] = status
        return status


_actions_cache: dict[str, tuple[float, list[str]]] = {}


def _actions(s) -> list[str]:
    """Action names for the search box; a DISTINCT over the whole log, so cached a minute."""
    key = settings().database_url
    hit = _actions_cache.get(key)
    if hit and time.monotonic() - hit[0] < 60:
        return hit[1]
    names = list(s.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action).limit(200)))
    _actions_cache[key] = (time.monotonic(), names)
    return names


@bp.get("/audit")
@requires(*AUDIT)
def index():
    error = None
    try:
        f = audit_filters(request.args)
        before = parse_seq(request.args.get("before"))
    except BadFilter as exc:
        f, before, error = audit_filters({}), None, str(exc)
    with session_scope() as s:
        page = list_audit(s, f, before=before)
        head = s.execute(select(func.max(AuditEntry.seq))).scalar()
        actions = _actions(s)
    return render_template("audit/index.html", page=page, f=f, head=head, actions=actions, status=last_status(),
                           error=error), (400 if error else 200)


@bp.post("/audit/verify")
@requires(*AUDIT)
def verify():
    status = run_verify(current_user.email)
    if status.result.ok:
        flash(f"Audit chain intact: {status.result.checked} entries verified in {status.seconds:.1f}s.", "ok")
    else:
        flash(f"Audit chain BROKEN at entry {status.result.first_bad_seq}: {status.result.reason}", "error")
    return redirect(url_for(".index"))


def _export_rows(f, since: int | None):
    """Stream entries oldest first, in batches, each batch in its own short read."""
    last = since if since is not None else 0
    while True:
        with session_scope() as s:
            stmt = audit_query(f).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(EXPORT_BATCH)
            batch = [audit.entry_dict(e) for e in s.scalars(stmt)]
        if not batch:
            return
        yield from batch
        last = batch[-1]["seq"]


def _filename(ext: str) -> str:
    return f"airlock-audit-{utcnow():%Y%m%dT%H%M%SZ}.{ext}"


def _export_args():
    return audit_filters(request.args), parse_seq(request.args.get("since"))


@bp.get("/audit/export.jsonl")
@requires(*AUDIT)
def export_jsonl():
    try:
        f, since = _export_args()
    except BadFilter as exc:
        return Response(str(exc), status=400, mimetype="text/plain")
    _audit_export(f, "jsonl")

    def gen():
        for row in _export_rows(f, since):
            # The same canonical form as `airlock audit export`, so SIEM parsers agree.
            yield audit.canonical_json(row) + "\n"

    return Response(stream_with_context(gen()), mimetype="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="{_filename("jsonl")}"'})


def _csv_cell(value) -> str:
    text = value if isinstance(value, str) else audit.canonical_json(value)
    # Spreadsheets run cells that start like a formula; auditors open these in one.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.get("/audit/export.csv")
@requires(*AUDIT)
def export_csv():
    try:
        f, since = _export_args()
    except BadFilter as exc:
        return Response(str(exc), status=400, mimetype="text/plain")
    _audit_export(f, "csv")
    columns = ("seq", "ts", "actor", "action", "target", "data", "prev_hash", "hash")

    def gen():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        for row in _export_rows(f, since):
            writer.writerow([row["seq"]] + [_csv_cell(row[c]) for c in columns[1:]])
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    return Response(stream_with_context(gen()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{_filename("csv")}"'})


def _audit_export(f, fmt: str) -> None:
    # Who took a copy of the log is itself worth knowing.
    with session_scope() as s:
        audit.append(s, current_user.email, "audit.export", fmt,
                     {"format": fmt, "filters": {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                                 for k, v in f.items() if v}})
