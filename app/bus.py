"""Cross-process wake-ups: polling on SQLite, LISTEN/NOTIFY on PostgreSQL.

Every event is a `bus_events` row written in the publisher's transaction, so it
becomes visible exactly when the state it announces does. On PostgreSQL the same
transaction also sends `NOTIFY airlock, 'channel:payload'`, delivered at commit.

Wake-ups are hints, delivered at least once (a reconnect may replay a few): whoever
wakes re-reads the state it cares about, and keeps a slow safety re-read of its own
in case a hint is lost.

Async side: one `Bus` per event loop (`get_bus()`), with ONE background listener
however many tasks wait. Sync side (Flask portal, scheduler): `SyncWatch` polls.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.config import settings
from app.db import engine_for
from app.models import BusEvent, utcnow

log = logging.getLogger(__name__)

PG_CHANNEL = "airlock"
KEEP_EVENTS = timedelta(minutes=10)
PRUNE_EVERY = 60.0  # seconds between prunes by one listener
LINGER = 5.0  # an idle listener stays up this long, so bursts of waiters reuse it
# After a reconnect we replay events from a little before the last moment the
# connection was known good; the slack covers clock skew between publisher hosts.
CATCH_UP_SLACK = timedelta(seconds=10)

Callback = Callable[[str, str], Any]


def _encode(channel: str, payload: str) -> str:
    # Channels may contain ':' (review:12), so the payload is the part after the LAST
    # ':'; escape it so a payload with ':' cannot shift that boundary.
    return f"{channel}:{payload.replace('%', '%25').replace(':', '%3A')}"


def _decode(message: str) -> tuple[str, str]:
    channel, _, payload = message.rpartition(":")
    return channel, payload.replace("%3A", ":").replace("%25", "%")


def publish(session: Session, channel: str, payload: str = "") -> None:
    """Announce `channel` in the caller's transaction; listeners hear it at commit."""
    if not channel or len(channel) > 100 or len(payload) > 500:
        raise ValueError("bus channel must be 1..100 characters and payload at most 500")
    session.execute(insert(BusEvent).values(channel=channel, payload=payload, created_at=utcnow()))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:c, :m)"), {"c": PG_CHANNEL, "m": _encode(channel, payload)})


def prune(session: Session, now: datetime | None = None) -> int:
    cutoff = (now or utcnow()) - KEEP_EVENTS
    return session.execute(delete(BusEvent).where(BusEvent.created_at < cutoff)).rowcount or 0


def _prune_url(url: str) -> None:
    with Session(engine_for(url)) as s, s.begin():
        prune(s)


def _max_id(url: str) -> int:
    with engine_for(url).connect() as c:
        return c.execute(select(func.coalesce(func.max(BusEvent.id), 0))).scalar_one()


def _events_after(url: str, last_id: int) -> list[tuple[int, str, str]]:
    with engine_for(url).connect() as c:
        rows = c.execute(
            text("SELECT id, channel, payload FROM bus_events WHERE id > :last ORDER BY id"), {"last": last_id}
        )
        return [tuple(r) for r in rows]


def _psycopg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _connect(conninfo: str):
    import psycopg

    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)


class Watch:
    """Interest in one channel, registered before the caller reads state (no lost wake-up)."""

    def __init__(self, bus: Bus, channel: str) -> None:
        self.bus, self.channel = bus, channel
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True if an event arrived since the watch began or since the last wait."""
        if not self._event.is_set():
            try:
                await asyncio.wait_for(self._event.wait(), max(0.0, timeout))
            except TimeoutError:
                return False
        self._event.clear()
        return True

    def close(self) -> None:
        self.bus._unwatch(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Bus:
    """The wake-up hub of one event loop: one listener task, many watchers.

    Use it from its loop's thread only; other threads use `SyncWatch`.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_pg = make_url(url).get_backend_name() == "postgresql"
        self.poll_seconds = settings().bus_poll_seconds
        self._watches: dict[str, set[Watch]] = {}
        self._subs: list[tuple[str, Callback]] = []
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._bg: set[asyncio.Task] = set()
        self._idle_since = time.monotonic()
        self._last_prune = 0.0
        self.stats = {"listener_starts": 0, "polls": 0, "events": 0, "reconnects": 0}

    # -- public ---------------------------------------------------------------
    def watch(self, channel: str) -> Watch:
        w = Watch(self, channel)
        self._watches.setdefault(channel, set()).add(w)
        self._ensure_listener()
        return w

    async def wait(self, channel: str, timeout: float) -> bool:
        with self.watch(channel) as w:
            return await w.wait(timeout)

    def subscribe(self, channel_prefix: str, callback: Callback) -> Callable[[], None]:
        """Call `callback(channel, payload)` (sync or async) for every matching event."""
        entry = (channel_prefix, callback)
        self._subs.append(entry)
        self._ensure_listener()

        def unsubscribe() -> None:
            if entry in self._subs:
                self._subs.remove(entry)
                self._touch()

        return unsubscribe

    async def ready(self, timeout: float) -> bool:
        """Wait until the listener hears every event committed from now on."""
        self._ensure_listener()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        task, self._task = self._task, None
        self._ready.clear()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    @property
    def watcher_count(self) -> int:
        return sum(len(group) for group in self._watches.values())

    @property
    def listening(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- internals -------------------------------------------------------------
    def _unwatch(self, w: Watch) -> None:
        group = self._watches.get(w.channel)
        if group is not None:
            group.discard(w)
            if not group:
                del self._watches[w.channel]
        self._touch()

    def _touch(self) -> None:
        if not self._watches and not self._subs:
            self._idle_since = time.monotonic()

    def _ensure_listener(self) -> None:
        if not self.listening:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="airlock-bus")

    def _should_stop(self) -> bool:
        """Decide, without awaiting, whether this listener retires; detach it if so."""
        if self._watches or self._subs or time.monotonic() - self._idle_since < LINGER:
            return False
        # Detach now, before any await, so a watcher arriving during cleanup starts a
        # fresh listener instead of trusting this one.
        self._task = None
        self._ready.clear()
        return True

    def _dispatch(self, channel: str, payload: str) -> None:
        self.stats["events"] += 1
        for w in list(self._watches.get(channel, ())):
            w.fire()
        for prefix, cb in list(self._subs):
            if channel.startswith(prefix):
                try:
                    result = cb(channel, payload)
                    if inspect.isawaitable(result):
                        self._spawn(result)
                except Exception:
                    log.exception("bus subscriber %r failed on %s", cb, channel)

    def _spawn(self, awaitable: Awaitable) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception:
                log.exception("bus subscriber failed")

        t = asyncio.get_running_loop().create_task(guarded())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _maybe_prune(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = time.monotonic()
        try:
            await asyncio.to_thread(_prune_url, self.url)
        except Exception as exc:  # pruning is housekeeping; never let it stop wake-ups
            log.warning("bus prune failed: %s", exc)

    async def _run(self) -> None:
        self.stats["listener_starts"] += 1
        me = asyncio.current_task()
        try:
            await (self._listen_pg() if self.is_pg else self._poll())
        finally:
            if self._task is me:
                self._task = None
                self._ready.clear()

    async def _poll(self) -> None:
        # SQLite takes one writer at a time, so ids appear in commit order and "id >
        # last" never skips an event that commits late.
        backoff = self.poll_seconds
        last: int | None = None
        while True:
            try:
                if last is None:
                    last = await asyncio.to_thread(_max_id, self.url)
                    self._ready.set()
                rows = await asyncio.to_thread(_events_after, self.url, last)
                self.stats["polls"] += 1
                backoff = self.poll_seconds
            except Exception as exc:
                log.warning("bus poll failed: %s", exc)
                backoff = min(backoff * 2, 2.0)
                await asyncio.sleep(backoff)
                if self._should_stop():
                    return
                continue
            for event_id, channel, payload in rows:
                last = max(last, event_id)
                self._dispatch(channel, payload)
            if self._should_stop():
                return
            await self._maybe_prune()
            await asyncio.sleep(self.poll_seconds)

    async def _listen_pg(self) -> None:
        import psycopg

        conninfo = _psycopg_conninfo(self.url)
        backoff, good_since = 0.1, None
        while True:
            conn = None
            try:
                conn = await _connect(conninfo)
                await conn.execute(f"LISTEN {PG_CHANNEL}")
                if good_since is not None:
                    # Events committed while we were away sent their NOTIFY to nobody.
                    self.stats["reconnects"] += 1
                    cur = await conn.execute(
                        "SELECT channel, payload FROM bus_events WHERE created_at >= %s ORDER BY id",
                        (good_since - CATCH_UP_SLACK,),
                    )
                    for channel, payload in await cur.fetchall():
                        self._dispatch(channel, payload)
                self._ready.set()
                backoff = 0.1
                while True:
                    good_since = utcnow()
                    async for n in conn.notifies(timeout=1.0):
                        self._dispatch(*_decode(n.payload))
                    if self._should_stop():
                        return
                    await self._maybe_prune()
            except (psycopg.Error, OSError) as exc:
                self._ready.clear()
                log.warning("bus listener lost its connection (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if self._should_stop():
                    return
            finally:
                if conn is not None and not conn.closed:
                    try:
                        await conn.close()
                    except Exception:
                        pass


_BUSES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bus] = weakref.WeakKeyDictionary()


def get_bus() -> Bus:
    """The Bus of the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    url = settings().database_url
    bus = _BUSES.get(loop)
    if bus is None or bus.url != url:
        if bus is not None and bus._task is not None:
            bus._task.cancel()
        bus = _BUSES[loop] = Bus(url)
    return bus


class SyncWatch:
    """Polling watcher for threads without an event loop (portal, scheduler).

    It remembers which events of its channel already exist when made, so an event
    that lands between "read the state" and "wait" still counts.
    """

    def __init__(self, channel: str, url: str | None = None) -> None:
        self.channel = channel
        self.url = url or settings().database_url
        self._seen = self._ids()

    def _ids(self) -> set[int]:
        # By id set rather than "id > max": on PostgreSQL a lower id may commit later.
        with engine_for(self.url).connect() as c:
            return set(c.execute(select(BusEvent.id).where(BusEvent.channel == self.channel)).scalars())

    def wait(self, timeout: float, poll: float | None = None) -> bool:
        poll = poll or settings().bus_poll_seconds
        deadline = time.monotonic() + timeout
        while True:
            ids = self._ids()
            if ids - self._seen:
                self._seen = ids
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(poll, remaining))


def wait_sync(channel: str, timeout: float) -> bool:
    """True if an event on `channel` is published within `timeout` seconds."""
    return SyncWatch(channel).wait(timeout)
