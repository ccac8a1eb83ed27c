"""Writing recordings to the store: what the recorder's writer runs, in a thread or in a
process of its own (app/recording_writer.py).

A batch is applied in one transaction, runs of events as multi-row INSERTs. A batch
that fails comes back to the recorder, which tries it again on the next tick; after
three failures in a row the batch is written item by item, so that one item the store
can never take does not hold up every recording.

Closing a recording seals it with the digest of its events. The writer keeps a
running digest of every recording it has seen from its first event, advanced only by
committed batches, so sealing a long session does not read it back; a recording it
has not seen whole (a restarted writer, a dropped item) is digested from the store.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import audit
from app.db import session_scope
from app.models import RecordedSession
from app.recording_seal import Heartbeat, apply_heartbeat, seal_orphans, seal_sessions

__all__ = ["Open", "Update", "Close", "StoreWriter", "seal_orphans"]

log = logging.getLogger(__name__)

_EVENT_COLUMNS = ("session_id", "seq", "t", "kind", "data")
_CHUNK = 200  # rows per INSERT: 1000 parameters, well within SQLite's and PostgreSQL's limits


@dataclass
class Open:
    row: dict[str, Any]


@dataclass
class Update:
    session_id: str
    values: dict[str, Any]


@dataclass
class Close:
    session_id: str
    ended_at: datetime
    event_count: int
    summary: dict[str, Any] = field(default_factory=dict)


# The C encoder built once: json.dumps builds one per call, which is half its cost on an
# event. No circular-reference check: events are trees their adapter builds.
_encode = (json.encoder.c_make_encoder(None, str, json.encoder.encode_basestring, None, ":", ",", False, False, True)
           if json.encoder.c_make_encoder is not None
           else json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).iterencode)


def compact_json(data: Any) -> str:
    """json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":")), faster."""
    return "".join(_encode(data, 0))


def rendered(item: tuple) -> tuple:
    """An event built by the writer, (session_id, seq, t, kind, render, args) from
    SessionRecording.event_later, as the event it stands for: its data as JSON (what
    `render` returns, if it returns a str)."""
    sid, seq, t, kind, render, args = item
    try:
        data = render(*args)
    except Exception as exc:  # noqa: BLE001 - keep the event, say what went wrong
        log.exception("rendering a recording event failed")
        data = {"render_error": type(exc).__name__}
    return sid, seq, t, kind, data if type(data) is str else compact_json(data)


class _RunningDigest:
    """The digest of a recording's events so far, and the seq it expects next."""

    __slots__ = ("hash", "next_seq")

    def __init__(self, h=None, next_seq: int = 1):
        self.hash = h or hashlib.sha256()
        self.next_seq = next_seq

    def copy(self) -> _RunningDigest:
        return _RunningDigest(self.hash.copy(), self.next_seq)

    def add(self, seq: int, t: float, kind: str, data: str) -> bool:
        if seq != self.next_seq:
            return False
        self.hash.update(audit.digest_line(seq, t, kind, data))
        self.next_seq += 1
        return True


_UNKNOWN = None  # in a batch's digests: this recording must be digested from the store


class StoreWriter:
    """Applies batches; returns what it could not write, for the recorder to keep."""

    def __init__(self) -> None:
        self.failures = 0
        self._digests: dict[str, _RunningDigest] = {}
        self.open_sessions: set[str] = set()  # opened through this writer, not yet closed

    def seal_open(self, reason: str) -> list[str]:
        """Seal what this writer opened and never closed: its parent died (the writer
        child calls this; nothing of those sessions can arrive after it)."""
        sealed = seal_sessions(sorted(self.open_sessions), reason)
        self.open_sessions.clear()
        return sealed

    def _track(self, batch: list[Any]) -> None:
        for item in batch:
            if type(item) is tuple:
                continue
            if isinstance(item, Open):
                self.open_sessions.add(item.row["id"])
            elif isinstance(item, Close):
                self.open_sessions.discard(item.session_id)

    def write(self, batch: list[Any]) -> list[Any]:
        work: dict[str, _RunningDigest | None] = {}
        try:
            with session_scope() as s:
                _apply_batch(s, batch, self._digests, work)
        except Exception:
            self.failures += 1
            log.exception("recording flush failed (%d in a row); %d items kept", self.failures, len(batch))
            if self.failures >= 3 and len(batch) > 1:
                return self._write_one_by_one(batch)
            return batch
        self.failures = 0
        self._track(batch)
        for session_id, digest in work.items():  # committed: the batch's digests become the running ones
            if digest is None:
                self._digests.pop(session_id, None)
            else:
                self._digests[session_id] = digest
        return []

    def _write_one_by_one(self, batch: list[Any]) -> list[Any]:
        """Isolate an item that can never be written, so it cannot block every recording."""
        kept, written = [], 0
        for item in batch:
            try:
                with session_scope() as s:
                    _apply(s, item)
                written += 1
                self._track([item])
            except Exception:
                kept.append(item)
        self._digests.clear()  # items may be missing now: digest from the store from here on
        if written:  # the store works, so what still fails is poison: drop it loudly
            for item in kept:
                log.error("dropping a recording item that cannot be written: %r", type(item).__name__)
            self.failures = 0
            return []
        return kept


@functools.lru_cache(maxsize=8)
def _events_sql(rows: int, mark: str) -> str:
    one = "(" + ", ".join([mark] * len(_EVENT_COLUMNS)) + ")"
    return f"INSERT INTO session_events ({', '.join(_EVENT_COLUMNS)}) VALUES " + ", ".join([one] * rows)


def _insert_events(s, rows: list[tuple]) -> None:
    """Many rows per INSERT statement. With executemany, the driver releases the GIL
    around every row, and a busy relay loop then takes it back each time: a thread
    hand-off per row, which cost more CPU than the insert itself."""
    conn = s.connection()
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for i in range(0, len(rows), _CHUNK):
        part = rows[i:i + _CHUNK]
        params = tuple(itertools.chain.from_iterable(part))  # each (session_id, seq, t, kind, data)
        conn.exec_driver_sql(_events_sql(len(part), mark), params)


def _apply_batch(s, batch: list[Any], running: dict[str, _RunningDigest] | None = None,
                 work: dict[str, _RunningDigest | None] | None = None) -> None:
    """Apply items in order, runs of events as multi-row INSERTs: the hot path (a busy
    relay records thousands of events a second; an ORM unit of work per row cost
    ~43 us, this ~2 us). `work` collects the batch's digests, copies of `running`."""
    running = running if running is not None else {}
    work = work if work is not None else {}
    rows: list[tuple] = []
    for item in batch:
        if type(item) is tuple:  # an event
            if len(item) == 6:
                item = rendered(item)
            rows.append(item)
            sid = item[0]
            digest = work[sid] if sid in work else _copy(running.get(sid))
            work[sid] = digest if digest is not None and digest.add(*item[1:]) else _UNKNOWN
            continue
        if rows:
            _insert_events(s, rows)
            rows = []
        if isinstance(item, Open):
            work[item.row["id"]] = _RunningDigest()
        elif isinstance(item, Close):
            sid = item.session_id
            digest = work[sid] if sid in work else _copy(running.get(sid))
            work[sid] = _UNKNOWN  # sealed: nothing more to follow
            if digest is not None and digest.next_seq == item.event_count + 1:
                _apply(s, item, digest.hash.hexdigest())
                continue
        _apply(s, item)
    if rows:
        _insert_events(s, rows)


def _copy(digest: _RunningDigest | None) -> _RunningDigest | None:
    return digest.copy() if digest is not None else None


def _open_data(row: dict[str, Any]) -> dict[str, Any]:
    # An HTTP session opens before its first request is routed: no connection yet, so
    # the entry names the host:port asked for rather than an empty connection.
    data = {"protocol": row["protocol"]}
    if row["connection"]:
        data["connection"] = row["connection"]
    if (row.get("meta") or {}).get("host"):
        data["host"] = row["meta"]["host"]
    data["client"] = row["client_addr"]
    return data


def _apply(s, item: Any, digest: str | None = None) -> None:
    if isinstance(item, Open):
        s.add(RecordedSession(**item.row))
        s.flush()
        row = item.row
        audit.append(
            s,
            actor=row["service_account"] or "anonymous",
            action="session.open",
            target=row["id"],
            data=_open_data(row),
        )
    elif type(item) is tuple:  # an event: (session_id, seq, t, kind, data)
        _insert_events(s, [item if len(item) == 5 else rendered(item)])
    elif isinstance(item, Heartbeat):
        apply_heartbeat(s, item)
    elif isinstance(item, Update):
        row = s.get(RecordedSession, item.session_id)
        if row is not None:
            for key, value in item.values.items():
                setattr(row, key, value)
    elif isinstance(item, Close):
        s.flush()
        row = s.get(RecordedSession, item.session_id)
        if row is None:
            return
        if row.ended_at is not None:  # sealed as an orphan meanwhile: that seal stands
            log.error("recording %s was sealed as ended abnormally before its close arrived", row.id)
            return
        if digest is None:
            digest = audit.recording_digest(s, item.session_id)
        row.ended_at = item.ended_at
        row.event_count = item.event_count
        row.digest = digest
        if item.summary:
            row.meta = {**(row.meta or {}), **item.summary}
        audit.append(
            s,
            actor=row.service_account or "anonymous",
            action="session.close",
            target=row.id,
            data={"session_id": row.id, "digest": digest, "events": item.event_count},
        )
