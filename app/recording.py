"""Session recording: durable, batched writes and asciicast v2 export.

Adapters call `recorder().open(...)` per runtime connection and `.event(kind, data)` for
what matters. A single writer thread per process flushes everything queued at most
`record_flush_seconds` apart (≤ 1 s), in one transaction, so the hot path never waits
on the store and a crash loses at most that window. Closing a session seals it: its
events' digest goes into the audit chain, so later edits fail `airlock audit verify`.
"""
from __future__ import annotations

import atexit
import functools
import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from app import audit
from app.config import settings
from app.db import session_scope
from app.models import RecordedSession, SessionEvent, utcnow

log = logging.getLogger(__name__)

EVENT_KINDS = frozenset({"input", "output", "decision", "notice", "resize"})


@dataclass
class _Open:
    row: dict[str, Any]


@dataclass
class _Update:
    session_id: str
    values: dict[str, Any]


@dataclass
class _Close:
    session_id: str
    ended_at: datetime
    event_count: int
    summary: dict[str, Any] = field(default_factory=dict)


class SessionRecording:
    """The recording of one runtime connection. Thread-safe; cheap to call."""

    def __init__(self, recorder: Recorder, session_id: str, protocol: str, service_account: str, connection: str):
        self._recorder = recorder
        self.id = session_id
        self.protocol = protocol
        self.service_account = service_account
        self.connection = connection
        self.run_id: str | None = None
        self._t0 = time.monotonic()
        self._seq = 0
        self._lock = threading.Lock()
        self._append = recorder._queue.append  # a deque: appending is atomic
        self.closed = False

    def event(self, kind: str, data: dict[str, Any] | str) -> None:
        """Queue one event: the data is serialised now (captured as it is at call time),
        and the item is a plain tuple (session_id, seq, t, kind, data), one lock taken."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        payload = data if type(data) is str else json.dumps(data, default=str, ensure_ascii=False)
        with self._lock:
            if self.closed:
                return
            self._seq = seq = self._seq + 1
            # Appended under the lock, so seq order is queue order and close() comes last.
            self._append((self.id, seq, round(time.monotonic() - self._t0, 6), kind, payload))

    def update(self, **values: Any) -> None:
        """Change session columns later (e.g. the service account once authenticated)."""
        for key in ("service_account", "connection", "run_id"):
            if key in values:
                setattr(self, key, values[key])
        self._recorder._put(_Update(self.id, values))

    def tag_run(self, run_id: str | None) -> None:
        if run_id and run_id != self.run_id:
            self.update(run_id=run_id[:200])

    def close(self, **summary: Any) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._recorder._put(_Close(self.id, utcnow(), self._seq, summary))


class Recorder:
    """One writer thread per process; every adapter shares it."""

    def __init__(self, flush_seconds: float | None = None):
        self.flush_seconds = min(flush_seconds or settings().record_flush_seconds, 1.0)
        self._queue: deque[Any] = deque()  # never replaced: sessions hold its append
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="airlock-recorder", daemon=True)
        self._thread.start()
        self.failures = 0

    def open(
        self,
        *,
        protocol: str,
        connection: str = "",
        service_account: str = "",
        client_addr: str = "",
        run_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> SessionRecording:
        session_id = str(uuid.uuid4())
        rec = SessionRecording(self, session_id, protocol, service_account, connection)
        rec.run_id = run_id
        self._put(
            _Open(
                dict(
                    id=session_id,
                    protocol=protocol,
                    connection=connection,
                    service_account=service_account,
                    client_addr=client_addr,
                    run_id=run_id,
                    meta=meta or {},
                    started_at=utcnow(),
                )
            )
        )
        return rec

    def _put(self, item: Any) -> None:
        self._queue.append(item)
        if isinstance(item, _Close):
            with self._cond:
                self._cond.notify()

    def _take(self) -> list[Any]:
        q = self._queue
        pop = q.popleft
        return [pop() for _ in range(len(q))]

    def flush(self) -> None:
        """Write everything queued now (tests, shutdown)."""
        batch = self._take()
        if batch:
            self._write(batch)

    def shutdown(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait(timeout=self.flush_seconds)
                stop = self._stop
            batch = self._take()
            if batch:
                self._write(batch)
            if stop:
                return

    def _write(self, batch: list[Any]) -> None:
        try:
            with session_scope() as s:
                _apply_batch(s, batch)
        except Exception:
            self.failures += 1
            log.exception("recording flush failed (%d in a row); %d items kept", self.failures, len(batch))
            if self.failures >= 3 and len(batch) > 1:
                batch = self._write_one_by_one(batch)
            # Keep what failed and try again next tick: recordings must survive a store blip.
            self._queue.extendleft(reversed(batch))
            time.sleep(min(1.0, 0.1 * self.failures))
        else:
            self.failures = 0

    def _write_one_by_one(self, batch: list[Any]) -> list[Any]:
        """Isolate an item that can never be written, so it cannot block every recording."""
        kept, written = [], 0
        for item in batch:
            try:
                with session_scope() as s:
                    _apply(s, item)
                written += 1
            except Exception:
                kept.append(item)
        if written:  # the store works, so what still fails is poison: drop it loudly
            for item in kept:
                log.error("dropping a recording item that cannot be written: %r", type(item).__name__)
            self.failures = 0
            return []
        return kept


_EVENT_COLUMNS = ("session_id", "seq", "t", "kind", "data")
_CHUNK = 200  # rows per INSERT: 1000 parameters, well within SQLite's and PostgreSQL's limits


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
        params = tuple(v for e in part for v in e)  # (session_id, seq, t, kind, data)
        conn.exec_driver_sql(_events_sql(len(part), mark), params)


def _apply_batch(s, batch: list[Any]) -> None:
    """Apply items in order, runs of events as multi-row INSERTs: the hot path (a busy
    relay records thousands of events a second; an ORM unit of work per row cost
    ~43 us of the writer thread, this ~2 us, and both hold the GIL)."""
    rows: list[tuple] = []
    for item in batch:
        if type(item) is tuple:  # an event
            rows.append(item)
            continue
        if rows:
            _insert_events(s, rows)
            rows = []
        _apply(s, item)
    if rows:
        _insert_events(s, rows)


def _apply(s, item: Any) -> None:
    if isinstance(item, _Open):
        s.add(RecordedSession(**item.row))
        s.flush()
        row = item.row
        audit.append(
            s,
            actor=row["service_account"] or "anonymous",
            action="session.open",
            target=row["id"],
            data={"protocol": row["protocol"], "connection": row["connection"], "client": row["client_addr"]},
        )
    elif type(item) is tuple:  # an event: (session_id, seq, t, kind, data)
        s.add(SessionEvent(**dict(zip(_EVENT_COLUMNS, item))))
    elif isinstance(item, _Update):
        row = s.get(RecordedSession, item.session_id)
        if row is not None:
            for key, value in item.values.items():
                setattr(row, key, value)
    elif isinstance(item, _Close):
        s.flush()
        row = s.get(RecordedSession, item.session_id)
        if row is None:
            return
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


_recorder: Recorder | None = None
_recorder_lock = threading.Lock()


def recorder() -> Recorder:
    global _recorder
    with _recorder_lock:
        if _recorder is None:
            _recorder = Recorder()
            atexit.register(_recorder.shutdown)
        return _recorder


def reset_recorder() -> None:
    """Flush and forget the process recorder (tests switch stores)."""
    global _recorder
    with _recorder_lock:
        if _recorder is not None:
            _recorder.shutdown()
            atexit.unregister(_recorder.shutdown)
        _recorder = None


def events(session, session_id: str) -> list[SessionEvent]:
    return list(session.scalars(select(SessionEvent).where(SessionEvent.session_id == session_id).order_by(SessionEvent.seq)))


def asciicast(session, session_id: str) -> str:
    """Export a terminal session as asciicast v2: a JSON header, then [t, code, data] lines."""
    row = session.get(RecordedSession, session_id)
    if row is None:
        raise KeyError(session_id)
    meta = row.meta or {}
    header = {
        "version": 2,
        "width": int(meta.get("width", 80)),
        "height": int(meta.get("height", 24)),
        "timestamp": int(row.started_at.replace(tzinfo=row.started_at.tzinfo or timezone.utc).timestamp()),
        "title": f"{row.service_account}@{row.connection}",
        "env": {"TERM": meta.get("term", "xterm-256color")},
    }
    lines = [json.dumps(header)]
    codes = {"output": "o", "input": "i", "resize": "r"}
    for ev in events(session, session_id):
        code = codes.get(ev.kind)
        if code is None:
            continue
        data = json.loads(ev.data)
        if code == "r":
            text = f"{data['width']}x{data['height']}"
        else:
            text = data.get("text", "") if isinstance(data, dict) else str(data)
        lines.append(json.dumps([ev.t, code, text], ensure_ascii=False))
    return "\n".join(lines) + "\n"
