"""`airlock proxy`: mitmproxy in-process with the addons in `addons/`.

Every option that decides what can get through is set here on purpose rather than
left at mitmproxy's default; `proxy_options` is the one list to read.

The master carries only the mitmproxy addons airlock needs (`mitmproxy_addons`), not
mitmdump's thirty: mitmproxy calls every addon that has a hook on every flow, and the
unused ones (map-local, sticky cookies, playback, saving, ...) cost more per request
than all of airlock's own addons together. Fewer moving parts is also less to audit.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
    await master.run()


def run() -> None:
    try:
        import uvloop
    except ImportError:  # optional: the standard loop works, a little slower
        asyncio.run(serve())
    else:
        uvloop.run(serve())
    sys.exit(0)
