"""Trailer fields: dropped where mitmproxy cannot carry them, never forwarded unchecked.

mitmproxy's HTTP/1 layer raises NotImplementedError when a chunked message ends with
trailer fields, and an AssertionError when asked to send trailers that arrived over
HTTP/2; either kills that connection's handler ("mitmproxy has crashed!"). So:
- the HTTP/1 chunked reader is wrapped so a message ends without its trailers;
- `Trailers` drops request trailers (the gate never reads them, so none reach an
  upstream unchecked) and response trailers bound for an HTTP/1 client; trailers an
  HTTP/2 client can receive (gRPC's grpc-status) are kept, scrubbed of credentials.
"""
from __future__ import annotations

import logging

import h11
from mitmproxy import http
from mitmproxy.proxy.layers.http import _http1

from .flowstate import state
from .streaming import scrub

log = logging.getLogger(__name__)


class _WithoutTrailers:
    __slots__ = ("_reader",)

    def __init__(self, reader) -> None:
        self._reader = reader

    def __call__(self, buf):
        event = self._reader(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            log.info("dropped %d HTTP/1 trailer field(s)", len(event.headers))
            return h11.EndOfMessage()
        return event

    def read_eof(self):
        return self._reader.read_eof()


def install() -> None:
    make = _http1.make_body_reader
    if getattr(make, "airlock_wrapped", False):
        return

    def make_body_reader(expected_size):
        reader = make(expected_size)
        return _WithoutTrailers(reader) if expected_size is None else reader

    make_body_reader.airlock_wrapped = True  # type: ignore[attr-defined]
    _http1.make_body_reader = make_body_reader


class Trailers:
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.trailers:
            log.info("dropped %d request trailer field(s)", len(flow.request.trailers.fields))
            flow.request.trailers = None

    def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        if resp is None or not resp.trailers:
            return
        if not (flow.request.is_http2 or flow.request.is_http3):
            resp.trailers = None
            return
        secrets = state(flow).secrets
        if secrets:
            resp.trailers.fields = tuple((k, scrub(v, secrets)) for k, v in resp.trailers.fields)


install()
