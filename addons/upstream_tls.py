"""Upstream TLS: verified always; a connection may add its own CA bundle (`ca_bundle`).

mitmproxy's TlsConfig (a default addon, so it runs before this one) builds the
upstream TLS connection with the global trust store and turns on hostname checking.
For a host whose connection names a `ca_bundle`, we swap in a context that trusts
that bundle on top of the global store. Hostname checking lives on the connection,
not the context, so it stays. The bundle is trusted for that connection's hosts only.
"""
from __future__ import annotations

import logging
import os

import certifi
from mitmproxy import ctx, tls
from mitmproxy.net import tls as net_tls
from OpenSSL import SSL

from app.gate import get_gate
from app.http import operation

log = logging.getLogger(__name__)


class UpstreamTLS:
    def __init__(self) -> None:
        self._contexts: dict[tuple, SSL.Context] = {}

    async def tls_start_server(self, tls_start: tls.TlsData) -> None:
        if tls_start.ssl_conn is None or tls_start.is_dtls:
            return
        address = tls_start.conn.address
        if not address:
            return
        host, port = address[0], address[1]
        target = None
        for key in operation.route_keys("https", host, port):
            target = await get_gate().connection_for_host(key)
            if target is not None:
                break
        bundle = target.config.get("ca_bundle") if target is not None else None
        if bundle:
            tls_start.ssl_conn.set_context(self._context(bundle))

    def _context(self, bundle: str) -> SSL.Context:
        stat = os.stat(bundle)  # a missing bundle fails the handshake: never a silent fallback
        o = ctx.options
        key = (bundle, stat.st_mtime_ns, stat.st_size, o.tls_version_server_min, o.tls_version_server_max,
               o.ciphers_server, o.tls_ecdh_curve_server, o.ssl_verify_upstream_trusted_ca,
               o.ssl_verify_upstream_trusted_confdir)
        context = self._contexts.get(key)
        if context is None:
            # The undecorated builder: mitmproxy caches its result, and we add to ours.
            context = net_tls.create_proxy_server_context.__wrapped__(
                method=net_tls.Method.TLS_CLIENT_METHOD,
                min_version=net_tls.Version[o.tls_version_server_min],
                max_version=net_tls.Version[o.tls_version_server_max],
                cipher_list=tuple(o.ciphers_server.split(":")) if o.ciphers_server else None,
                ecdh_curve=net_tls.get_curve(o.tls_ecdh_curve_server),
                verify=net_tls.Verify.VERIFY_PEER,
                ca_path=o.ssl_verify_upstream_trusted_confdir,
                ca_pemfile=o.ssl_verify_upstream_trusted_ca or (None if o.ssl_verify_upstream_trusted_confdir
                                                                else certifi.where()),
                client_cert=None,
                legacy_server_connect=False,
            )
            context.load_verify_locations(bundle)
            self._contexts = {k: v for k, v in self._contexts.items() if k[0] != bundle}
            self._contexts[key] = context
            log.info("trusting %s for upstream TLS of its connection", bundle)
        return context
