"""`airlock relay`: run the protocol listeners on one uvloop event loop.

`LISTENERS` is the registry: a name and an async factory that starts a listener and
returns something with `close()` and `async wait_closed()` (an asyncio.Server will
do). The MySQL and SSH relays add their own line. SIGTERM or SIGINT stops accepting,
ends open sessions with a FATAL/disconnect, and flushes the recordings.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from typing import Awaitable, Callable

from app.config import settings

log = logging.getLogger(__name__)

# name -> "module:function"; the function is `async def start() -> closable`
LISTENERS: dict[str, str] = {
    "postgres": "app.relay.server:start_postgres",
}


async def start_postgres():
    from .postgres import PostgresRelay

    cfg = settings()
    return await PostgresRelay().start(cfg.bind, cfg.postgres_port)


def _factory(ref: str) -> Callable[[], Awaitable]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


async def serve(names: list[str] | None = None, stop: asyncio.Event | None = None) -> None:
    """Start the listeners (all, or `names`) and run until `stop` is set or a signal arrives."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    running = []
    try:
        for name, ref in LISTENERS.items():
            if names is None or name in names:
                running.append((name, await _factory(ref)()))
        await stop.wait()
    finally:
        for name, listener in running:
            shutdown = getattr(listener, "shutdown_sessions", None)
            if shutdown is not None:
                shutdown()
            listener.close()
        for name, listener in running:
            try:
                await asyncio.wait_for(listener.wait_closed(), 10)
            except Exception:  # noqa: BLE001 - stopping anyway
                log.warning("%s listener did not stop cleanly", name)
        from app.recording import recorder

        await asyncio.to_thread(recorder().flush)
        log.info("relay stopped")


def run() -> None:
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(serve())
