"""`airlock proxy`: mitmproxy in-process with the addons in `addons/`.

Every option that decides what can get through is set here on purpose rather than
left at mitmproxy's default; `proxy_options` is the one list to read.

The master carries only the mitmproxy addons airlock needs (`mitmproxy_addons`), not
mitmdump's thirty: mitmproxy calls every addon that has a hook on every flow, and the
unused ones (map-local, sticky cookies, playback, saving, ...) cost more per request
than all of airlock's own addons together. Fewer moving parts is also less to audit.

mitmproxy runs one event loop on one core, so `airlock proxy` runs a worker process
per core (AIRLOCK_PROXY_WORKERS, like the relay's AIRLOCK_RELAY_WORKERS). Each worker
is a whole proxy. As in the relay, the parent binds the listening socket and every
worker accepts from that one queue, a busier worker (more open connections) letting a
quieter one go first; a connection (a tunnel) then stays with its worker. SO_REUSEPORT,
used before, hashes each connection to one worker's own queue: 10 tunnels came out 3
and 7 in half the trials, 8 opened one after another 5/3 or 6/2, and runtimes keep
few, long tunnels, so a worker could sit idle beside a busy one; and the connections
waiting in a dead worker's queue were reset. The parent makes the CA, seals recordings
that dead processes left open, keeps the socket, and restarts a worker that dies
(app/relay/workers.py).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvloop

from app.ca import ca_cert_path, ensure_ca
from app.config import Settings, settings

log = logging.getLogger(__name__)

# Store reads, token checks and held reviews run in threads: room for many held flows
# at once without an unrelated request queueing behind them.
IO_THREADS = 64

# A worker with more open tunnels than the quietest waits this long per extra tunnel (at
# most ACCEPT_DELAY_MAX) before taking a new connection. The quieter worker takes it at
# once if its loop is free; the wait only costs when that worker is busy or starved,
# and must outlast such a stretch: with 5 ms a tunnel and a loaded machine, 8 tunnels
# still went 7/1. Tunnels live long and open with a TLS handshake, so it is cheap.
ACCEPT_DELAY = 0.02
ACCEPT_DELAY_MAX = 0.1


def proxy_options(cfg: Settings, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "mode": ["regular"],  # explicit proxy: runtimes set HTTPS_PROXY
        "listen_host": cfg.bind,
        "listen_port": cfg.proxy_port,
        "confdir": str(cfg.ca_dir),  # our CA, under mitmproxy's file names (app/ca.py)
        # Runtimes reach us from loopback or private networks; a public client address
        # means a misconfigured exposure, so it is refused even before authentication.
        "block_global": True,
        "block_private": False,
        "ssl_insecure": False,  # upstream certificates are verified, always
        # No upstream connection before a request is allowed: a denied request, or one
        # from a client that fails authentication, never touches the upstream.
        "connection_strategy": "lazy",
        "upstream_cert": False,
        # Only HTTP is proxied: raw TCP inside a CONNECT tunnel would bypass every rule.
        "rawtcp": False,
        "http3": False,
        "websocket": True,
        # Streaming is decided by the addons (see addons/limits.py for why not by mitmproxy).
        "stream_large_bodies": None,
        "body_size_limit": None,
        "termlog_verbosity": "warn",
    }
    options.update(overrides)
    return options


def mitmproxy_addons() -> list[object]:
    """mitmproxy's own addons that an explicit, authenticated HTTP(S) proxy needs.

    Left out on purpose: onboarding (mitm.it would answer before our addons), proxyauth
    (ours is addons/identity.py), scripts, map/modify/sticky/playback/save addons.
    """
    from mitmproxy.addons import block, core, disable_h2c, dns_resolver, errorcheck, next_layer, proxyserver, \
        tlsconfig

    return [core.Core(), block.Block(), disable_h2c.DisableH2C(), proxyserver.Proxyserver(),
            dns_resolver.DnsResolver(), next_layer.NextLayer(), tlsconfig.TlsConfig(), errorcheck.ErrorCheck()]


class _SharedListener:
    """Serves mitmproxy's connections from listening sockets the parent bound, in place
    of the asyncio.Server that mitmproxy would start (it needs close() and .sockets)."""

    def __init__(self, sockets: list[socket.socket], handler, link) -> None:
        self.sockets = sockets
        self._handler, self._link = handler, link
        self._tasks = {asyncio.get_running_loop().create_task(self._accept(sock)) for sock in sockets}
        # The port accepts (into the parent's queue) before any worker runs: this line
        # says when this worker takes connections.
        print(f"airlock proxy worker {link.index + 1} of {link.count} accepting", flush=True)

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Every worker is woken by a new connection; a busier one waits before taking
            # it, so a quieter one gets it. The wait comes after the wake-up, not before
            # the accept: tunnels that open one at a time would otherwise find every
            # worker already waiting in accept(), and go to whichever the kernel woke first.
            await _readable(loop, sock)
            delay = self._link.accept_delay(per_connection=ACCEPT_DELAY, most=ACCEPT_DELAY_MAX)
            if delay:
                await asyncio.sleep(delay)
            try:
                conn, _ = sock.accept()
            except BlockingIOError:  # another worker took it
                continue
            except OSError as exc:  # EMFILE and the like: back off, keep serving
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            self._link.session_opened(1)  # counted at once: tunnels often open together
            try:
                # As asyncio.start_server does: the handler starts in connection_made,
                # before anything is read. Reading first (open_connection) let an early
                # EOF reach mitmproxy before it had registered the connection's handler
                # (its tasks start eagerly), and it crashed.
                await loop.connect_accepted_socket(self._protocol, sock=conn)
            except OSError:
                conn.close()
                self._link.session_opened(-1)

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(), self._serve)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handler(reader, writer)
        finally:
            self._link.session_opened(-1)

    def close(self) -> None:
        # Stop accepting; the sockets stay open in the parent, so nothing queued is lost.
        for task in self._tasks:
            task.cancel()


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def _serve_shared(sockets: list[socket.socket], link) -> None:
    """Make this worker's mitmproxy take its TCP connections from the parent's `sockets`."""
    from mitmproxy.proxy import mode_servers

    cls = mode_servers.AsyncioServerInstance
    plain = cls.listen

    async def listen(self, host: str, port: int):
        if self.mode.transport_protocol != "tcp":
            return await plain(self, host, port)
        return [_SharedListener(sockets, self.handle_stream, link)]

    cls.listen = listen


async def serve(cfg: Settings | None = None, **overrides: Any) -> None:
    from mitmproxy import options
    from mitmproxy.master import Master

    from addons import airlock_addons

    cfg = cfg or settings()
    ensure_ca(cfg.ca_dir)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="airlock-io"))
    master = Master(options.Options(), with_termlog=True)
    master.addons.add(*mitmproxy_addons())
    master.addons.add(*airlock_addons())
    # Addon options exist only once their addons are loaded.
    master.options.update(**proxy_options(cfg, **overrides))
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, master.shutdown)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    print(f"airlock proxy listening on {cfg.bind}:{cfg.proxy_port}; runtimes trust {ca_cert_path(cfg.ca_dir)}",
          flush=True)
    try:
        await master.run()
    finally:
        # A worker leaves with os._exit (no atexit): write what is queued now.
        from app.recording import recorder

        await asyncio.to_thread(recorder().shutdown)


def _run_one(cfg: Settings) -> None:
    uvloop.run(serve(cfg))


def run() -> None:
    from app.db import reset_engines
    from app.recording_seal import seal_dead_process, seal_orphans_quietly
    from app.relay.workers import run_workers, worker_count

    cfg = settings()
    ensure_ca(cfg.ca_dir)  # once, before the workers: they must all present the same CA
    seal_orphans_quietly()
    reset_engines()  # no pooled store connection may be shared with a forked worker
    workers = worker_count("AIRLOCK_PROXY_WORKERS")
    if workers == 1:
        _run_one(cfg)
        sys.exit(0)
    from app.relay.listen import bind

    sockets = bind(cfg.bind, cfg.proxy_port)  # an OSError (port taken) names its setting in app.cli
    cfg = replace(cfg, proxy_port=sockets[0].getsockname()[1])  # port 0 picks one here
    # print, like the listening line: mitmproxy's own INFO logging is one line per connection
    print(f"airlock proxy: {workers} worker processes on port {cfg.proxy_port}", flush=True)

    def worker(link) -> None:
        _serve_shared(sockets, link)
        _run_one(cfg)

    def sealed(pid: int) -> None:
        try:
            seal_dead_process(pid)
        finally:  # a store error here must not leave a connection open for the next fork
            reset_engines()

    code = run_workers(workers, worker, name="proxy", on_death=sealed)
    for sock in sockets:
        sock.close()
    sys.exit(code)
