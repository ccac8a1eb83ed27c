"""Credential injection: the connection's headers (and query parameters) go on the way out.

A header or parameter of the same name sent by the runtime is dropped first, so a
runtime cannot choose its own credential. The values are remembered in the flow state
so the response path can scrub them from whatever an upstream echoes back, in every
form an echo commonly takes: as is, base64 (standard or URL-safe, padded or not, and
inside a longer base64 text at any offset), percent-encoded, JSON-escaped and hex.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
from urllib.parse import quote, quote_plus

from mitmproxy import http

from .flowstate import state, unavailable
from .shown import REASON_HEADER

MIN_SCRUB = 8  # shorter values are too common in bodies to scrub without breaking them


def _base64_forms(raw: bytes) -> list[bytes]:
    """Base64 of `raw`, whole and as the run of characters it always produces inside a
    longer base64 text, for each of the three offsets it can start at."""
    out = []
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + raw).rstrip(b"=")
        # The first characters mix in the bytes before it, the last one those after it.
        core = encoded[(0, 2, 3)[k]:(8 * (k + len(raw))) // 6]
        out += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    whole = base64.b64encode(raw)
    return out + [whole, base64.urlsafe_b64encode(raw)]


@functools.lru_cache(maxsize=256)  # the same few credentials, on every request
def scrub_forms(value: str) -> tuple[bytes, ...]:
    """Every encoding of an injected value (and of its token alone) to scrub."""
    plain = [value]
    scheme, _, token = value.partition(" ")
    if token and scheme.isalpha():  # "Bearer abc": the token alone may come back too
        plain.append(token.strip())
    forms: list[bytes] = []
    for text in plain:
        raw = text.encode()
        quoted, escaped = quote(text, safe=""), json.dumps(text)[1:-1]
        forms += [raw, quoted.encode(), quoted.lower().encode(), quote_plus(text).encode(), escaped.encode(),
                  escaped.replace("/", "\\/").encode(), binascii.hexlify(raw), binascii.hexlify(raw).upper()]
        forms += _base64_forms(raw)
    return tuple(f for f in dict.fromkeys(forms) if len(f) >= MIN_SCRUB)


class Injector:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._inject(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        self._inject(flow)

    def _inject(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        st = state(flow)
        if not st.allowed or st.target is None or st.injected:
            return  # not decided yet (JSON requests wait for `request`), or nothing to do
        st.injected = True
        # The agent's reason was for the approvers: the upstream never sees it.
        flow.request.headers.pop(REASON_HEADER, None)
        target = st.target
        secrets: list[bytes] = []
        injected: list[str] = []
        for kind, names in (("header", target.config.get("inject_headers") or ()),
                            ("query", target.config.get("inject_query") or ())):
            for name in names:
                secret = target.secrets.get(f"{kind}:{name}")
                if secret is None:
                    unavailable(flow, f"connection {target.name!r} has no value for {kind} {name!r}")
                    return
                value = secret.reveal()
                if kind == "header":
                    flow.request.headers.pop(name, None)
                    flow.request.headers[name] = value
                    injected.append(name.lower())
                else:
                    flow.request.query[name] = value
                secrets.extend(scrub_forms(value))
        st.secrets = tuple(sorted(set(secrets), key=len, reverse=True))
        st.injected_headers = tuple(injected)
