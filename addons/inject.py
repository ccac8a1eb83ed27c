"""Credential injection: the connection's headers (and query parameters) go on the way out.

A header or parameter of the same name sent by the runtime is dropped first, so a
runtime cannot choose its own credential. The values are remembered in the flow state
so the response path can scrub them from whatever an upstream echoes back.
"""
from __future__ import annotations

from mitmproxy import http

from .flowstate import state, unavailable

MIN_SCRUB = 8  # shorter values are too common in bodies to scrub without breaking them


def _scrub_forms(value: str) -> list[bytes]:
    forms = [value]
    scheme, _, token = value.partition(" ")
    if token and scheme.isalpha():  # "Bearer abc": the token alone may come back too
        forms.append(token.strip())
    return [f.encode() for f in forms if len(f) >= MIN_SCRUB]


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
                secrets.extend(_scrub_forms(value))
        st.secrets = tuple(sorted(set(secrets), key=len, reverse=True))
        st.injected_headers = tuple(injected)
