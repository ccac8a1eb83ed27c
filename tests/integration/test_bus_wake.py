"""Cross-process wake-ups on SQLite (polling) and PostgreSQL (LISTEN/NOTIFY).

Decisions are written by a separate Python process, as a portal would. Waiters use
a 30 s safety interval, so only the bus can wake them within the assertions' bounds.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest
import uvloop
from sqlalchemy import text

from app import approvals
from app import bus as bus_module
from app.bus import get_bus
from app.db import session_scope
from app.models import Group, User
from app.types import Operation, Principal, ReviewSpec, Verdict

NO_SAFETY = 30.0
DECIDE = """
import sys, time
from app import approvals
from app.db import session_scope
with session_scope() as s:
    for rid in sys.argv[1].split(","):
        approvals.vote(s, int(rid), voter_email="alice@example.com", decision="approve")
print(time.time(), flush=True)
"""
LOOPS = {"asyncio": None, "uvloop": uvloop.new_event_loop}


@pytest.fixture
def approver(store):
    with session_scope() as s:
        s.add(User(email="alice@example.com", groups=[Group(name="dba")]))
    return store


def _create(fingerprint: str = "fp") -> int:
    op = Operation(protocol="postgres", connection="orders-db", kind="write", text="DELETE FROM t",
                   fingerprint=fingerprint)
    verdict = Verdict(action="review", rule="r", review=ReviewSpec(groups=("dba",), count=1))
    with session_scope() as s:
        return approvals.create_review(s, principal=Principal(service_account="agent"), operation=op,
                                       verdict=verdict).id


async def _decide_in_another_process(review_ids: list[int]) -> float:
    """Approve from a fresh interpreter; return the wall time just after its commit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DECIDE, ",".join(map(str, review_ids)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return float(out.split()[0])


def _listen_connections() -> int:
    with session_scope() as s:
        return s.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN airlock'"
        )).scalar_one()


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_decision_from_another_process_wakes_the_waiter(approver, loop):
    rid = _create()

    async def main():
        waiter = asyncio.create_task(approvals.wait_for_decision(rid, 20, safety_interval=NO_SAFETY))
        await asyncio.sleep(0)
        assert await get_bus().ready(5)
        started = time.monotonic()
        decider = asyncio.create_task(_decide_in_another_process([rid]))
        status = await waiter
        woke = time.time()
        return status, woke - await decider, time.monotonic() - started

    status, latency, elapsed = asyncio.run(main(), loop_factory=LOOPS[loop])
    assert status == "approved"
    # The decider stamps the time after its commit returns, so a waiter woken by the
    # NOTIFY may even come out a hair earlier: bound it from above only.
    assert latency < 1.0
    assert elapsed < 10  # the waiter's own timeout was 20 s


def test_fifty_waiters_share_one_listener(approver):
    rids = [_create(f"fp-{i}") for i in range(50)]
    is_pg = approver.startswith("postgresql")

    async def main():
        bus = get_bus()
        waiters = [asyncio.create_task(approvals.wait_for_decision(r, 20, safety_interval=NO_SAFETY)) for r in rids]
        while bus.watcher_count < 50:
            await asyncio.sleep(0.01)
        assert await bus.ready(5)
        polls = bus.stats["polls"]
        await asyncio.sleep(1.0)
        polls = bus.stats["polls"] - polls
        listens = await asyncio.to_thread(_listen_connections) if is_pg else None
        committed = await _decide_in_another_process(rids)
        statuses = await asyncio.gather(*waiters)
        return statuses, time.time() - committed, polls, listens, dict(bus.stats)

    statuses, latency, polls, listens, stats = asyncio.run(main())
    assert statuses == ["approved"] * 50
    assert latency < 2.0
    assert stats["listener_starts"] == 1
    if is_pg:
        assert listens == 1 and polls == 0
    else:
        # One poller at 0.02 s makes ~50 polls a second; one poller per waiter would make 2,500.
        assert 10 <= polls <= 80


def test_timeout_returns_pending(approver):
    rid = _create()

    async def main():
        started = time.monotonic()
        status = await approvals.wait_for_decision(rid, 0.3, safety_interval=NO_SAFETY)
        return status, time.monotonic() - started

    status, elapsed = asyncio.run(main())
    assert status == "pending"
    assert 0.3 <= elapsed < 1.5


def test_subscribers_get_matching_channels_with_payloads_intact(store):
    def publish(*events: tuple[str, str]) -> None:
        with session_scope() as s:
            for channel, payload in events:
                bus_module.publish(s, channel, payload)

    async def main():
        bus = get_bus()
        plain, awaited = [], []

        async def on_review(channel: str, payload: str) -> None:
            awaited.append((channel, payload))

        unsubscribe = bus.subscribe("policy", lambda c, p: plain.append((c, p)))
        bus.subscribe("review:", on_review)
        assert await bus.ready(5)
        await asyncio.to_thread(publish, ("policy", "42"), ("reviews", "7"), ("review:9", "a:b%3Ac"))
        for _ in range(300):
            if plain and awaited:
                break
            await asyncio.sleep(0.01)
        unsubscribe()
        await asyncio.to_thread(publish, ("policy", "43"), ("review:9", "second"))
        for _ in range(300):
            if len(awaited) == 2:
                break
            await asyncio.sleep(0.01)
        return plain, awaited

    plain, awaited = asyncio.run(main())
    assert plain == [("policy", "42")]
    assert awaited == [("review:9", "a:b%3Ac"), ("review:9", "second")]


def test_wait_sync_polls_for_a_channel(store):
    def publish_later() -> None:
        time.sleep(0.2)
        with session_scope() as s:
            bus_module.publish(s, "campaign:3", "closed")

    t = threading.Thread(target=publish_later)
    t.start()
    started = time.monotonic()
    assert bus_module.wait_sync("campaign:3", 5) is True
    assert time.monotonic() - started < 2
    t.join()
    assert bus_module.wait_sync("campaign:3", 0.2) is False


def test_one_bus_per_event_loop(store):
    async def grab():
        return get_bus(), get_bus()

    a1, a2 = asyncio.run(grab())
    b1, _ = asyncio.run(grab())
    assert a1 is a2 and a1 is not b1


def test_listener_reconnects_and_replays_what_it_missed(pg_store, monkeypatch):
    real_connect = bus_module._connect
    calls = 0

    async def main():
        nonlocal calls
        reconnecting, release = asyncio.Event(), asyncio.Event()

        async def gated_connect(conninfo: str):
            nonlocal calls
            calls += 1
            if calls == 2:  # hold the reconnect until the event has been published
                reconnecting.set()
                await release.wait()
            return await real_connect(conninfo)

        monkeypatch.setattr(bus_module, "_connect", gated_connect)
        bus = get_bus()
        with bus.watch("ping") as watch:
            assert await bus.ready(5)
            await asyncio.to_thread(_terminate_listener)
            await asyncio.wait_for(reconnecting.wait(), 5)
            assert not await bus.ready(0.05)

            def publish() -> None:
                with session_scope() as s:
                    bus_module.publish(s, "ping", "while-away")

            await asyncio.to_thread(publish)  # its NOTIFY reaches nobody
            release.set()
            woke = await watch.wait(5)
        return woke, dict(bus.stats)

    woke, stats = asyncio.run(main())
    assert woke is True
    assert stats["reconnects"] == 1 and stats["listener_starts"] == 1 and calls == 2


def _terminate_listener() -> None:
    with session_scope() as s:
        killed = s.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query = 'LISTEN airlock'"
        )).scalar_one()
    assert killed == 1


def test_old_events_are_pruned_by_the_listener(store, monkeypatch):
    from datetime import timedelta

    from sqlalchemy import select

    from app.models import BusEvent, utcnow

    def add_events() -> None:
        with session_scope() as s:
            s.add_all([
                BusEvent(channel="reviews", payload="old", created_at=utcnow() - timedelta(minutes=11)),
                BusEvent(channel="reviews", payload="new", created_at=utcnow() - timedelta(minutes=9)),
            ])

    def payloads() -> list[str]:
        with session_scope() as s:
            return sorted(s.scalars(select(BusEvent.payload)))

    add_events()
    with session_scope() as s:
        assert bus_module.prune(s) == 1
    assert payloads() == ["new"]

    add_events()
    monkeypatch.setattr(bus_module, "PRUNE_EVERY", 0.0)

    async def main():
        with get_bus().watch("anything"):
            for _ in range(300):
                if await asyncio.to_thread(payloads) == ["new", "new"]:
                    return True
                await asyncio.sleep(0.01)
        return False

    assert asyncio.run(main()) is True
