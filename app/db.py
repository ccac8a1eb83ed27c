"""Engine and sessions. One engine per database URL per process; one session per unit of work.

Every store call is bounded in time (docs/deployment.md, "Timeouts"): a store that
stalls becomes an error the callers turn into a refusal (503 / 57P03), never a wait
without end. See app.deadlines for how.
"""
from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app import deadlines
from app.config import settings


log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """The store could not be reached; callers fail closed."""


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the portal read while the relay writes; busy_timeout makes writers
    # from several processes take turns instead of failing at once.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={int(settings().store_statement_timeout * 1000)}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # A second of a busy relay's recording is thousands of rows: with SQLite's 2 MB
    # default cache, a transaction that size spills and re-reads pages (a pread and a
    # pwrite per row, seen under strace). 64 MB keeps the working set in memory.
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


_ENGINES: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    if url not in _ENGINES:
        _ENGINES[url] = _create(url)
    return _ENGINES[url]


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(url, connect_args={"check_same_thread": False,
                                               "timeout": settings().store_statement_timeout})
        event.listen(eng, "connect", _sqlite_pragmas)
        return eng
    eng = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=pg_connect_args())
    deadlines.bound(eng.dialect, settings().store_statement_timeout + deadlines.GRACE)
    return eng


def pg_connect_args() -> dict:
    """libpq settings that bound each part of a store connection's life."""
    cfg = settings()
    ms = int(cfg.store_statement_timeout * 1000)
    return {
        # Connecting, TLS and authentication together (a server that accepts and says nothing).
        "connect_timeout": max(1, math.ceil(cfg.store_connect_timeout)),
        # A statement the server works on too long, or that waits too long for a lock,
        # fails there with 57014 / 55P03 and leaves the connection usable.
        "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        # A peer that vanished (host down, path cut): unacknowledged data or silent
        # keepalives end the connection instead of leaving it open for hours.
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 2, "keepalives_count": 3,
        "tcp_user_timeout": int((cfg.store_statement_timeout + deadlines.GRACE) * 1000),
    }


def engine() -> Engine:
    return engine_for(settings().database_url)


@lru_cache(maxsize=8)
def _factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error."""
    session = _factory(settings().database_url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engines() -> None:
    """Forget engines and session factories (tests switch databases)."""
    for eng in _ENGINES.values():
        eng.dispose()
    _ENGINES.clear()
    _factory.cache_clear()


# -- fork safety -------------------------------------------------------------------
# The proxy and the relay fork their workers (app/relay/workers.py). A database
# connection open at fork() exists twice, and neither copy may be used, nor closed, by
# the child (SQLite's "How To Corrupt", 2.6; SQLAlchemy, "Using Connection Pools with
# Multiprocessing or os.fork()"). For SQLite this holds even for a copy the child never
# touches: the lock state that SQLite keeps per file in the process is copied with it
# while the child holds none of the parent's fcntl locks, so the child's own new
# connections to that file would believe they hold a lock they do not have, and another
# process could then checkpoint, reset or delete the WAL under them: a malformed store.
# So, around every os.fork():
# - before, in the parent: every pooled SQLite connection is closed (they are reopened
#   on demand). One in use at that moment cannot be, and is reported: it is a bug.
# - after, in the child: every engine gets a new, empty pool (dispose(close=False)), and
#   the inherited pools are kept referenced here, so that garbage collection never
#   closes the parent's connections from the child (closing rolls back, and SQLite's
#   rollback writes to the WAL index that both processes map; psycopg's close sends
#   Terminate on the socket the parent still uses).

_INHERITED: list = []  # pools a forked child inherited; never used, never closed


def _close_sqlite_before_fork() -> None:
    for url, eng in list(_ENGINES.items()):
        if eng.dialect.name != "sqlite" or eng.url.database in (None, "", ":memory:"):
            continue  # a private in-memory store has no file to corrupt, and closing would empty it
        busy = eng.pool.checkedout() if hasattr(eng.pool, "checkedout") else 0
        if busy:
            log.error("fork() while %d connection(s) to %s are in use: the child inherits them open", busy, url)
        eng.dispose()  # closes what is checked in; what is checked out stays with its user


def _forget_engines_in_child() -> None:
    for eng in _ENGINES.values():
        _INHERITED.append(eng.pool)
        eng.dispose(close=False)


os.register_at_fork(before=_close_sqlite_before_fork, after_in_child=_forget_engines_in_child)
