"""A deadline on every call into a PostgreSQL store connection.

The server's statement_timeout makes a slow but live server give up by itself. A server
that does not answer at all (a frozen host, a stalled proxy or path, a dead peer whose
packets something in between still acknowledges) never sends that error, and libpq
would wait for it forever. So each call that waits for the server is armed with a
deadline, and one watchdog thread shuts the socket of a call that is overdue: the call
then fails at once with an OperationalError, SQLAlchemy drops the connection, and the
caller refuses what it was doing.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

GRACE = 2.0  # seconds past statement_timeout: the server's own error comes first when it can
_BOUNDED = ("do_execute", "do_executemany", "do_execute_no_params", "do_commit", "do_rollback", "do_ping")


class _Watchdog:
    def __init__(self) -> None:
        self._armed: dict[int, tuple[float, Any, int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._next = 0
        self._sleeping_until = float("inf")  # when the watchdog wakes next by itself

    def arm(self, conn: Any, seconds: float) -> int | None:
        try:
            fd = conn.pgconn.socket
        except Exception:
            return None  # not connected: nothing to wait for
        due = time.monotonic() + seconds
        with self._lock:
            self._next += 1
            token = self._next
            self._armed[token] = (due, conn, fd)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="store-deadlines", daemon=True)
                self._thread.start()
            if due < self._sleeping_until:  # rare: deadlines mostly share one length
                self._wake.notify()
        return token

    def disarm(self, token: int | None) -> None:
        if token is not None:
            with self._lock:
                self._armed.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                overdue = [(t, c, fd) for t, (d, c, fd) in self._armed.items() if d <= now]
                for token, _, _ in overdue:
                    del self._armed[token]
                if not overdue:
                    soonest = min((d for d, _, _ in self._armed.values()), default=now + 60)
                    self._sleeping_until = soonest
                    self._wake.wait(max(0.01, soonest - now))
                    self._sleeping_until = float("inf")
                    continue
            for _, conn, fd in overdue:
                _cut(conn, fd)


def _cut(conn: Any, fd: int) -> None:
    try:
        if conn.closed or conn.pgconn.socket != fd:
            return  # finished and closed meanwhile: the number may belong to another socket now
    except Exception:
        return
    log.warning("the store did not answer in time; closing that connection")
    try:
        # shutdown() acts on the socket itself, so a duplicate descriptor will do, and
        # libpq's blocked wait sees end-of-file at once.
        sock = socket.socket(fileno=socket.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
    except OSError:
        pass


_watchdog = _Watchdog()


@contextmanager
def deadline(conn: Any, seconds: float) -> Iterator[None]:
    """Bound whatever `conn` (a psycopg connection) waits for inside the block."""
    token = _watchdog.arm(conn, seconds)
    try:
        yield
    finally:
        _watchdog.disarm(token)


def _connection_of(first: Any) -> Any:
    # do_execute* get a cursor, do_commit/do_rollback/do_ping a (pool-proxied) connection.
    conn = getattr(first, "dbapi_connection", None)
    if conn is not None:
        return conn
    return first if hasattr(first, "pgconn") else getattr(first, "connection", first)


def _wrap(fn: Callable, seconds: float) -> Callable:
    def bounded(first, *args, **kwargs):
        context = args[-1] if fn.__name__.startswith("do_execute") and args else None
        options = getattr(context, "execution_options", None) or {}
        if options.get("store_deadline", True) is False:
            return fn(first, *args, **kwargs)
        token = _watchdog.arm(_connection_of(first), seconds)
        try:
            return fn(first, *args, **kwargs)
        finally:
            _watchdog.disarm(token)

    bounded.__name__ = fn.__name__
    return bounded


def bound(dialect: Any, seconds: float) -> None:
    """Arm every call of this engine's dialect that waits for the server.
    Opt out per connection with `execution_options(store_deadline=False)` (migrations)."""
    for name in _BOUNDED:
        setattr(dialect, name, _wrap(getattr(dialect, name), seconds))
