"""Header fields that could be read two ways are refused before anything else runs.

mitmproxy splits a request head on LF only, so a bare CR stays inside a header value
and goes upstream verbatim, where a server that also breaks lines on CR reads a header
the gate never saw (a second Host, an X-HTTP-Method-Override). It also joins obs-fold
continuation lines into the value with a CRLF in it. A NUL ends the value for C
parsers. So a field whose name or value holds CR, LF or NUL (obs-fold included), or
whose name is not an RFC 9110 token, gets 400 and nothing of the request is forwarded.
The same holds for CONNECT requests, and for response headers on their way back (502).
"""
from __future__ import annotations

import re

from mitmproxy import http

from .flowstate import bad_request, refuse, state

_BAD_VALUE = re.compile(rb"[\r\n\x00]")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def bad_field(headers: http.Headers) -> str | None:
    """Why one of these header fields cannot be forwarded, or None when all can."""
    for name, value in headers.fields:
        if not _TOKEN.match(name):
            return f"the header name {name[:40]!r} is not a token"
        if _BAD_VALUE.search(value):
            return f"the header {name.decode('latin-1')!r} contains CR, LF or NUL (or is folded over lines)"
    return None


class HeaderCheck:
    def http_connect(self, flow: http.HTTPFlow) -> None:
        self.requestheaders(flow)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        problem = bad_field(flow.request.headers)
        if problem is not None:
            bad_request(flow, problem)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.error or flow.response is None or state(flow).refused:
            return
        problem = bad_field(flow.response.headers)
        if problem is not None:
            from .streaming import Discard  # the upstream body still arrives: swallow it

            refuse(flow, 502, {"error": "bad_gateway", "message": f"the upstream response is malformed: {problem}"})
            flow.response.stream = Discard(flow.response.raw_content or b"")
