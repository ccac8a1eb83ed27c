"""Recordings where mask rules applied: once masking values, once finding nothing.

The shapes are the adapters' own (the relays' and the proxy's recording tests check
those): the gate's decision names the rules that apply ("masks"), and an answer says how
many values were actually masked ("masked": N) only when some were.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select

from app.db import session_scope
from app.models import SessionEvent
from app.recording import recorder

from .scenario import _record

RUN = "run-masks"
SQL_MASKED = "SELECT id, email, note FROM invoices WHERE id < 3"
SQL_NOTHING = "SELECT id, total FROM invoices WHERE id < 3"
URL_MASKED = "https://api.payments.test/v1/customers/cus_1"
URL_NOTHING = "https://api.payments.test/v1/balance"


@dataclass
class Masked:
    sql_session: str
    http_session: str
    plain_session: str  # mask rules applied, nothing masked anywhere


def _allow(op: str, kind: str = "read") -> dict:
    return {"action": "allow", "status": None, "rule": "mask-pii", "kind": kind, "operation": op, "masks": ["mask-pii"]}


def seed_masked() -> Masked:
    sql = _record("postgres", "billing-db", "billing-agent", [
        ("decision", _allow(SQL_MASKED)),
        ("output", {"sql": SQL_MASKED, "masks": ["mask-pii"], "ms": 1.2, "masked": 2, "tag": "SELECT 2", "rows": 2,
                    "columns": ["id", "email", "note"], "sample": [["1", "[REDACTED]", "paid"], ["2", "[REDACTED]", "late"]]}),
        ("decision", _allow(SQL_NOTHING)),
        ("output", {"sql": SQL_NOTHING, "masks": ["mask-pii"], "ms": 0.9, "tag": "SELECT 2", "rows": 2,
                    "columns": ["id", "total"], "sample": [["1", "120.00"], ["2", "80.00"]]}),
    ], run_id=RUN)
    http = _record("http", "payments-api", "billing-agent", [
        ("input", {"flow": "m1", "method": "GET", "url": URL_MASKED, "headers": {"accept": "application/json"}}),
        ("decision", _allow(f"GET {URL_MASKED}")),
        ("output", {"flow": "m1", "status": 200, "headers": {"content-type": "application/json"}, "masked": 1,
                    "body": {"text": '{"id": "cus_1", "email": "[REDACTED:email]"}', "bytes": 44, "truncated": False}}),
        ("input", {"flow": "m2", "method": "GET", "url": URL_NOTHING, "headers": {"accept": "application/json"}}),
        ("decision", _allow(f"GET {URL_NOTHING}")),
        ("output", {"flow": "m2", "status": 200, "headers": {"content-type": "application/json"},
                    "body": {"text": '{"available": 1200}', "bytes": 19, "truncated": False}}),
    ], run_id=RUN)
    plain = _record("postgres", "billing-db", "billing-agent", [
        ("decision", _allow(SQL_NOTHING)),
        ("output", {"sql": SQL_NOTHING, "masks": ["mask-pii"], "ms": 0.7, "tag": "SELECT 2", "rows": 2,
                    "columns": ["id", "total"], "sample": [["1", "120.00"], ["2", "80.00"]]}),
    ], run_id=None)
    _stored({sql: 4, http: 6, plain: 2})
    return Masked(sql_session=sql, http_session=http, plain_session=plain)


def _stored(expected: dict[str, int], timeout: float = 10.0) -> None:
    """Flush until every event is in the store: a batch the recorder's own thread is
    writing at the same moment (or one retried after a failed write) lands a little later."""
    deadline = time.monotonic() + timeout
    while True:
        recorder().flush()
        with session_scope() as s:
            counts = dict(s.execute(select(SessionEvent.session_id, func.count())
                                    .where(SessionEvent.session_id.in_(list(expected)))
                                    .group_by(SessionEvent.session_id)).all())
        if all(counts.get(sid, 0) >= n for sid, n in expected.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"recordings not stored: {counts} of {expected}")
        time.sleep(0.1)
