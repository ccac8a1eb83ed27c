"""HTTP/1 trailer fields are dropped, in both directions.

mitmproxy's HTTP/1 layer raises NotImplementedError when a chunked message ends with
trailer fields, which kills that connection's handler ("mitmproxy has crashed!"). The
chunked reader it builds is wrapped so the end of a message arrives without them.
Dropping is the safe direction: the gate never reads trailers, so none reach an
upstream unchecked, and an upstream's trailers (which could echo a credential) never
reach the runtime. HTTP/2 trailers are handled by mitmproxy and are not affected.
"""
from __future__ import annotations

import logging

import h11
from mitmproxy.proxy.layers.http import _http1

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


install()
