"""mitmproxy addons: thin adapters between HTTP flows and app.gate.

Order matters; each addon reads what the ones before it left in `state(flow)`:

    GrantWatch      open client connections closed when their grant is revoked or expires
                    (first: it must see each request before the gatekeeper decides it, so
                    a revoke waits for that request's refusal instead of cutting it off)
    Limits          body-size options shared by the others
    HeaderCheck     header fields with CR, LF or NUL -> 400, before anything reads them
    Trailers        trailer fields dropped, or scrubbed where the client can take them
    ProxyIdentity   Proxy-Authorization -> principal, or 407 / 503
    Sessions        session per client connection, run id, the request recorded
    Gatekeeper      flow -> Operation -> gate.decide -> allow, or 403 / 503
    Injector        the connection's credentials added on the way out
    UpstreamTLS     per-connection CA bundle for the upstream handshake
    ResponseMasker  masking and credential scrubbing of what comes back
    Exchanges       the response recorded, as the runtime saw it

A response set by an earlier addon is final: every request-side hook starts with
`if flow.response or flow.error: return`.

Two behaviours of mitmproxy itself are adjusted on import: HTTP/1 trailers are dropped
instead of crashing the connection (trailers.py), and a body mitmproxy collects whole
is capped while it arrives (bodycap.py).
"""
from __future__ import annotations

from .framing import HeaderCheck
from .gatekeeper import Gatekeeper
from .grantwatch import GrantWatch
from .identity import ProxyIdentity
from .inject import Injector
from .limits import Limits
from .masking import ResponseMasker
from .recording import Exchanges, Sessions
from .trailers import Trailers
from .upstream_tls import UpstreamTLS


def airlock_addons() -> list[object]:
    return [GrantWatch(), Limits(), HeaderCheck(), Trailers(), ProxyIdentity(), Sessions(), Gatekeeper(), Injector(),
            UpstreamTLS(), ResponseMasker(), Exchanges()]


__all__ = ["airlock_addons"]
