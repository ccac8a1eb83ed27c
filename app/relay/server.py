"""`airlock relay`: the protocol listeners, in one or more worker processes.

`LISTENERS` is the registry. Each entry names two functions:
- `prepare()`, run once in the parent before the workers start: bind sockets, make
  certificates; its result is inherited by every worker;
- `async start(prepared, link)`, run in each worker: returns something with `close()`
  and `async wait_closed()` (an asyncio.Server will do), and optionally
  `shutdown_sessions()` to end open sessions politely.
The MySQL and SSH relays add their own entry. With AIRLOCK_RELAY_WORKERS=1 (or one
CPU) everything runs in this process; otherwise see workers.py. SIGTERM or SIGINT
stops accepting, ends open sessions with an error, and flushes the recordings.
"""
from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
import sys
from typing import Any

from app.recording import use_writer_process
from app.recording_seal import seal_orphans_quietly

from .workers import WorkerLink, run_workers, worker_count

log = logging.getLogger(__name__)

# name -> ("module:prepare", "module:start")
LISTENERS: dict[str, tuple[str, str]] = {
    "postgres": ("app.relay.postgres.listener:prepare", "app.relay.postgres.listener:start"),
    "ssh": ("app.relay.ssh.server:prepare", "app.relay.ssh.server:start"),
    "mysql": ("app.relay.mysql.session:prepare", "app.relay.mysql.session:start"),
}


def _function(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def prepare(names: list[str] | None = None) -> list[tuple[str, Any]]:
    return [(name, _function(prep)()) for name, (prep, _) in LISTENERS.items() if names is None or name in names]


async def serve(prepared: list[tuple[str, Any]], link: WorkerLink | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the prepared listeners until `stop` is set or a signal arrives."""
    loop = asyncio.get_running_loop()
    link = link or WorkerLink()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    running = []
    try:
        for name, state in prepared:
            running.append((name, await _function(LISTENERS[name][1])(state, link)))
        tune_gc()
        # A worker that starts (or restarts after one died) seals what dead processes left open.
        sealing = asyncio.ensure_future(asyncio.to_thread(seal_orphans_quietly))
        await stop.wait()
        await asyncio.wait({sealing}, timeout=5)  # a stalled store must not hold up a stop
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


def tune_gc() -> None:
    """What is loaded by now (SQLAlchemy, pglast, the policy) lives as long as the
    process: keep it out of every garbage collection, and collect less often, since a
    busy relay allocates a few short-lived objects per message."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def run() -> None:
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prepared = prepare()
    workers = worker_count()
    if workers == 1:
        use_writer_process()
        uvloop.run(serve(prepared))
        return
    log.info("relay: %d worker processes", workers)

    def worker(link: WorkerLink) -> None:
        use_writer_process()  # one writer per worker, started after the fork
        uvloop.run(serve(prepared, link))

    code = run_workers(workers, worker)
    log.info("relay stopped")
    sys.exit(code)
