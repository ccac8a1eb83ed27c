"""Leader election for `airlock scheduler`: exactly one process runs jobs.

A job store must never be shared by two running schedulers, and campaign jobs revoke
access, so "probably the leader" is not good enough: a leader runs jobs only while it
can prove, right now, that it holds the lock.

- PostgreSQL: a session advisory lock on a dedicated connection. The server frees it
  when that session ends, so everything that ends the session hands leadership on:
  a crash, `pg_terminate_backend`, a dead host (TCP keepalives on both ends), and a
  hung leader, because the session is opened with `idle_session_timeout` = the lease
  and the leader's heartbeat is the only thing that keeps it from going idle.
  `holds()` asks pg_locks on that same session; any error is "no".
- SQLite: an exclusive `flock` on `$AIRLOCK_HOME/scheduler.lock`, for one host. The
  kernel frees it when the process dies; a stopped (SIGSTOP) process keeps it.
"""
from __future__ import annotations

import fcntl
import logging
import threading
from typing import Protocol

import psycopg
from sqlalchemy.engine import make_url

from app.config import Settings
from app.deadlines import deadline

log = logging.getLogger("airlock.scheduler")

LOCK_KEY = 0x41_49_52_4C  # "AIRL": the advisory lock every scheduler competes for
APPLICATION_NAME = "airlock-scheduler-lock"


class Lease(Protocol):
    def try_acquire(self) -> bool:
        """True once this process holds the lock; False if another does. May raise on store errors."""

    def holds(self) -> bool:
        """Proof, checked now, that this process still holds the lock. Never raises."""

    def release(self) -> None: ...


class FileLease:
    def __init__(self, path) -> None:
        self.path = path
        self._fh = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        return True

    def holds(self) -> bool:
        return self._fh is not None and not self._fh.closed

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor drops the flock
            self._fh = None


class PostgresLease:
    def __init__(self, url: str, *, lease: float, connect_timeout: float) -> None:
        if lease < 2:
            raise ValueError("the scheduler lease must be at least 2 seconds")
        self._url = make_url(url)
        self.lease = lease
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection | None = None
        self._held = False
        # The heartbeat thread and the scheduler thread share the one session.
        self._lock = threading.Lock()

    def _connect(self) -> psycopg.Connection:
        u = self._url
        keepalive = max(1, int(self.lease // 3))
        conn = psycopg.connect(
            host=u.host or "localhost", port=u.port or 5432, user=u.username, password=u.password,
            dbname=u.database, application_name=APPLICATION_NAME, autocommit=True,
            connect_timeout=max(1, int(self.connect_timeout)),
            # Our side: notice a vanished server. The server side (SET below): notice us.
            keepalives=1, keepalives_idle=keepalive, keepalives_interval=1, keepalives_count=3,
            tcp_user_timeout=int(self.lease * 1000),
            **{k: v for k, v in u.query.items() if isinstance(v, str)},  # sslmode and friends
        )
        ms = int(self.lease * 1000)
        conn.execute(f"SET idle_session_timeout = {ms}")
        conn.execute(f"SET statement_timeout = {ms}")
        conn.execute(f"SET tcp_keepalives_idle = {keepalive}")
        conn.execute("SET tcp_keepalives_interval = 1")
        conn.execute("SET tcp_keepalives_count = 3")
        return conn

    def try_acquire(self) -> bool:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            try:
                with deadline(self._conn, self.lease):
                    got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
            except Exception:
                self._drop()
                raise
            self._held = bool(got)
            return self._held

    def holds(self) -> bool:
        with self._lock:
            if not self._held or self._conn is None:
                return False
            try:
                # A 64-bit key shows in pg_locks as classid (high half) and objid (low half).
                # Bounded: a leader that cannot get an answer within the lease is no leader.
                with deadline(self._conn, self.lease):
                    row = self._conn.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 1",
                        (LOCK_KEY >> 32, LOCK_KEY & 0xFFFFFFFF),
                    ).fetchone()
            except Exception as exc:
                log.warning("scheduler lock session failed: %s", type(exc).__name__)
                self._drop()
                return False
            if not row or row[0] != 1:
                self._drop()
                return False
            return True

    def release(self) -> None:
        with self._lock:
            # Unlock first: closing alone leaves the hand-over to the server's backend exit,
            # which a standby asking at once can beat (and then wait a whole retry).
            if self._held and self._conn is not None and not self._conn.closed:
                try:
                    with deadline(self._conn, self.lease):
                        self._conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
                except Exception:  # the close below ends the session, and the lock with it
                    pass
            self._drop()

    def _drop(self) -> None:
        # Closing the session releases the advisory lock on the server (if it is still ours).
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def lease_for(cfg: Settings) -> Lease:
    if cfg.scheduler_lease_seconds < 2 * cfg.scheduler_heartbeat_seconds:
        # The heartbeat is what keeps the lock session from timing out.
        raise ValueError("AIRLOCK_SCHEDULER_LEASE_SECONDS must be at least twice AIRLOCK_SCHEDULER_HEARTBEAT_SECONDS")
    if cfg.is_sqlite:
        return FileLease(cfg.home / "scheduler.lock")
    return PostgresLease(cfg.database_url, lease=cfg.scheduler_lease_seconds,
                         connect_timeout=cfg.store_connect_timeout)
