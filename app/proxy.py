"""`airlock proxy`: mitmproxy in-process with the addons in `addons/`.

Every option that decides what can get through is set here on purpose rather than
left at mitmproxy's default; `proxy_options` is the one list to read.

The master carries only the mitmproxy addons airlock needs (`mitmproxy_addons`), not
mitmdump's thirty: mitmproxy calls every addon that has a hook on every flow, and the
unused ones (map-local, sticky cookies, playback, saving, ...) cost more per request
than all of airlock's own addons together. Fewer moving parts is also less to audit.

mitmproxy runs one event loop on one core, so `airlock proxy` runs a worker process
per core (AIRLOCK_PROXY_WORKERS, like the relay's AIRLOCK_RELAY_WORKERS). Each worker
is a whole proxy that listens on the same port with SO_REUSEPORT; the kernel spreads
new connections across them, and a connection (a tunnel) stays with its worker. The
parent makes the CA, seals recordings that dead processes left open, holds the port,
and restarts a worker that dies (app/relay/workers.py).
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


def _listen_with_reuse_port() -> None:
    """Make mitmproxy's TCP listeners bind with SO_REUSEPORT, so that every worker can
    listen on the proxy port (mitmproxy calls asyncio.start_server(handler, host, port))."""
    from mitmproxy.proxy import mode_servers

    cls = mode_servers.AsyncioServerInstance
    if getattr(cls.listen, "airlock_reuse_port", False):
        return
    plain = cls.listen

    async def listen(self, host: str, port: int):
        if self.mode.transport_protocol != "tcp" or port == 0:
            return await plain(self, host, port)
        return [await asyncio.start_server(self.handle_stream, host, port, reuse_port=True)]

    listen.airlock_reuse_port = True
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


def _hold_port(cfg: Settings) -> tuple[socket.socket, Settings]:
    """A socket bound (not listening) with SO_REUSEPORT on the proxy port, kept by the
    parent: workers that restart find the port still theirs. Port 0 picks one here."""
    family = socket.AF_INET6 if ":" in cfg.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((cfg.bind, cfg.proxy_port))
    return sock, replace(cfg, proxy_port=sock.getsockname()[1])


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
    held, cfg = _hold_port(cfg)
    # print, like the listening line: mitmproxy's own INFO logging is one line per connection
    print(f"airlock proxy: {workers} worker processes on port {cfg.proxy_port}", flush=True)
    _listen_with_reuse_port()

    def worker(_link) -> None:
        held.close()
        _run_one(cfg)

    def sealed(pid: int) -> None:
        seal_dead_process(pid)
        reset_engines()

    code = run_workers(workers, worker, name="proxy", on_death=sealed)
    held.close()
    sys.exit(code)
