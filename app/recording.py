"""Session recording: durable, batched writes and asciicast v2 export.

Adapters call `recorder().open(...)` per runtime connection and `.event(kind, data)` for
what matters. A single writer thread per process flushes everything queued at most
`record_flush_seconds` apart (≤ 1 s), in one transaction, so the hot path never waits
on the store and a crash loses at most that window. Closing a session seals it: its
events' digest goes into the audit chain, so later edits fail `airlock audit verify`.
"""
from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import uuid
from collections import deque
from datetime import timezone
from typing import Any, Callable

from sqlalchemy import select

from app.config import settings
from app.models import RecordedSession, SessionEvent, utcnow
from app.recording_seal import heartbeat_seconds, new_owner
from app.recording_store import Close, Open, StoreWriter, Update

log = logging.getLogger(__name__)

EVENT_KINDS = frozenset({"input", "output", "decision", "notice", "resize"})


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
            self._append((self.id, seq, int((time.monotonic() - self._t0) * 1e6) / 1e6, kind, payload))

    def event_later(self, kind: str, render: Callable[..., dict[str, Any] | str], *args: Any) -> None:
        """Queue an event whose data the writer builds, as `render(*args)`: a module-level
        function returning the data (or its JSON, as a str), and arguments that pickle
        and that nobody changes afterwards. For hot
        paths: the relay hands over a statement's raw answer, and the writer, in a process
        of its own, decodes it (app/relay/postgres/answers.py). The item is a plain tuple, six
        long, (session_id, seq, t, kind, render, args): the cheapest thing to pickle."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        with self._lock:
            if self.closed:
                return
            self._seq = seq = self._seq + 1
            self._append((self.id, seq, int((time.monotonic() - self._t0) * 1e6) / 1e6, kind, render, args))

    def update(self, **values: Any) -> None:
        """Change session columns later (e.g. the service account once authenticated)."""
        for key in ("service_account", "connection", "run_id"):
            if key in values:
                setattr(self, key, values[key])
        self._recorder._put(Update(self.id, values))

    def tag_run(self, run_id: str | None) -> None:
        if run_id and run_id != self.run_id:
            self.update(run_id=run_id[:200])

    def close(self, **summary: Any) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._recorder._put(Close(self.id, utcnow(), self._seq, summary))


class Recorder:
    """One writer thread per process; every adapter shares it."""

    def __init__(self, flush_seconds: float | None = None, sink=None):
        self._sink = sink or StoreWriter()  # write(batch) -> what it could not write
        self.flush_seconds = min(flush_seconds or settings().record_flush_seconds, 1.0)
        self._queue: deque[Any] = deque()  # never replaced: sessions hold its append
        self._cond = threading.Condition()
        self._stop = False
        # The lease on this process's sessions: the heartbeat goes first, so its row
        # exists before any session names it (app/recording_seal.py).
        self.owner = new_owner()
        self._beat_every = heartbeat_seconds()
        self._next_beat = time.monotonic() + self._beat_every
        self._queue.append(self.owner)
        self._thread = threading.Thread(target=self._run, name="airlock-recorder", daemon=True)
        self._thread.start()

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
            Open(
                dict(
                    id=session_id,
                    protocol=protocol,
                    connection=connection,
                    service_account=service_account,
                    client_addr=client_addr,
                    run_id=run_id,
                    meta=meta or {},
                    started_at=utcnow(),
                    owner=self.owner.owner,
                )
            )
        )
        return rec

    def _put(self, item: Any) -> None:
        self._queue.append(item)
        if isinstance(item, Close):
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
        close = getattr(self._sink, "close", None)
        if close is not None:
            close()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait(timeout=self.flush_seconds)
                stop = self._stop
            if time.monotonic() >= self._next_beat:
                self._next_beat = time.monotonic() + self._beat_every
                self._queue.append(self.owner)
            batch = self._take()
            if batch:
                self._write(batch)
            if stop:
                return

    def _write(self, batch: list[Any]) -> None:
        kept = self._sink.write(batch)
        if kept:
            # Keep what failed and try again next tick: recordings must survive a store blip.
            self._queue.extendleft(reversed(kept))
            time.sleep(min(1.0, 0.1 * max(1, self.failures)))

    @property
    def failures(self) -> int:
        return getattr(self._sink, "failures", 0)


_recorder: Recorder | None = None
_recorder_lock = threading.Lock()


def recorder() -> Recorder:
    global _recorder
    with _recorder_lock:
        if _recorder is None:
            _recorder = Recorder()
            atexit.register(_recorder.shutdown)
        return _recorder


def use_writer_process() -> None:
    """Write this process's recordings from a child process (app/recording_writer.py),
    so that store work never competes with the caller's event loop for the GIL. The
    relay calls this in each worker before serving."""
    global _recorder
    from app.recording_writer import WriterProcess

    with _recorder_lock:
        if _recorder is not None:
            _recorder.shutdown()
            atexit.unregister(_recorder.shutdown)
        _recorder = Recorder(sink=WriterProcess())
        atexit.register(_recorder.shutdown)


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
