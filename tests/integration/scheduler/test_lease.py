"""The scheduler's lease on the real PostgreSQL: what counts as proof, and how long a
stalled store can keep a leader believing it leads."""
from __future__ import annotations

import time

import psycopg
import pytest

from app.config import settings
from app.deadlines import deadline
from app.leader import PostgresLease, lease_for
from tests.stallproxy import StallProxy


def via(proxy: StallProxy, url: str) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def test_one_lease_per_database_and_it_frees_with_the_session(pg_store):
    a = PostgresLease(pg_store, lease=2, connect_timeout=2)
    b = PostgresLease(pg_store, lease=2, connect_timeout=2)
    assert a.try_acquire() and a.holds()
    assert not b.try_acquire() and not b.holds()
    a.release()
    assert not a.holds()
    assert b.try_acquire() and b.holds()
    b.release()


def test_a_stalled_store_ends_the_proof_within_the_lease(pg_store):
    with StallProxy(("127.0.0.1", 5432)) as proxy:
        lease = PostgresLease(via(proxy, pg_store), lease=2, connect_timeout=2)
        assert lease.try_acquire() and lease.holds()
        proxy.stall()
        start = time.monotonic()
        assert not lease.holds()
        assert time.monotonic() - start < 2 + 1.0
        # Meanwhile the server ended the idle lock session: another process may lead.
        other = PostgresLease(pg_store, lease=2, connect_timeout=2)
        deadline_at = time.monotonic() + 5
        while not other.try_acquire():
            assert time.monotonic() < deadline_at, "the server kept the stalled leader's lock"
            time.sleep(0.2)
        proxy.heal()
        assert not lease.holds()  # once lost, never silently regained
        other.release()


def test_a_deadline_cuts_a_raw_connection_that_gets_no_answer(pg_store):
    with StallProxy(("127.0.0.1", 5432)) as proxy:
        conn = psycopg.connect(f"host=127.0.0.1 port={proxy.port} user=postgres dbname=postgres", autocommit=True)
        proxy.stall()
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError), deadline(conn, 0.5):
            conn.execute("SELECT 1")
        assert time.monotonic() - start < 1.5
        conn.close()


def test_a_lease_shorter_than_two_heartbeats_is_refused(pg_store, monkeypatch):
    monkeypatch.setenv("AIRLOCK_SCHEDULER_HEARTBEAT_SECONDS", "6")
    settings.cache_clear()
    with pytest.raises(ValueError):
        lease_for(settings())
