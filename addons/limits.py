"""Body-size options shared by the addons (declared once, here).

mitmproxy's own `stream_large_bodies` stays off on purpose: when a body of unknown
length grows past it mid-way, mitmproxy switches to streaming without calling any hook
again, so a chunked request would reach the upstream before the policy saw it and a
chunked response would reach the runtime unmasked. The addons decide streaming
themselves, in `requestheaders` and `responseheaders`, from these limits.
"""
from __future__ import annotations

from dataclasses import dataclass

from mitmproxy import ctx, exceptions
from mitmproxy.utils import human


@dataclass(frozen=True, slots=True)
class Sizes:
    body: int = 1 << 20  # bodies above this, or of unknown length, are streamed
    json: int = 16 << 20  # JSON bodies held whole for body rules / field masks, at most
    record: int = 64 << 10  # bytes of each body kept in the recording


_current = Sizes()


def sizes() -> Sizes:
    return _current


class Limits:
    def load(self, loader) -> None:
        loader.add_option("airlock_body_limit", str, "1m",
                          "Bodies larger than this, or of unknown length, are streamed instead of held in memory.")
        loader.add_option("airlock_json_limit", str, "16m",
                          "Largest JSON body held whole: request bodies for body rules, responses for field masks.")
        loader.add_option("airlock_record_limit", str, "64k", "Bytes of each body kept in the session recording.")

    def configure(self, updated: set[str]) -> None:
        global _current
        if updated & {"airlock_body_limit", "airlock_json_limit", "airlock_record_limit"}:
            try:
                _current = Sizes(
                    body=human.parse_size(ctx.options.airlock_body_limit) or 0,
                    json=human.parse_size(ctx.options.airlock_json_limit) or 0,
                    record=human.parse_size(ctx.options.airlock_record_limit) or 0,
                )
            except ValueError as exc:
                raise exceptions.OptionsError(str(exc)) from None


# -- bodies held whole: a cap enforced while they arrive ------------------------------
#
# A body that is not streamed is collected by mitmproxy before the `request` hook, with
# no bound when its length is unknown (chunked, HTTP/2), and mitmproxy's own
# body_size_limit is global (it would kill the large uploads we stream). So the hook
# `requestheaders` sets a cap per flow, and mitmproxy's buffering step is wrapped to
# enforce it: past the cap the request gets 413 and nothing of it goes upstream. A
# request already refused (its response set) keeps nothing of its body at all.

CAP_KEY = "airlock.body_cap"


def body_cap(flow, limit: int) -> None:
    flow.metadata[CAP_KEY] = limit


def _install_cap() -> None:
    from mitmproxy import flow as mflow
    from mitmproxy.proxy.commands import Log
    from mitmproxy.proxy.layers.http import HttpStream
    from mitmproxy.proxy.layers.http._events import ErrorCode, RequestData, ResponseProtocolError
    from mitmproxy.proxy.layers.http._hooks import HttpErrorHook
    from mitmproxy.proxy.layers.http._base import ReceiveHttp  # noqa: F401  (the layer's own import path)
    from mitmproxy.proxy.layers.http import SendHttp

    consume = HttpStream.state_consume_request_body
    if getattr(consume, "airlock_capped", False):
        return

    def capped(self, event):
        if isinstance(event, RequestData) and self.flow is not None:
            if self.flow.response is not None:
                return  # refused already: the body is read off the wire and dropped
            limit = self.flow.metadata.get(CAP_KEY)
            if limit is not None and len(self.request_body_buf) + len(event.data) > limit:
                message = f"the request body is larger than {limit} bytes and cannot be checked"
                self.request_body_buf.clear()
                self.flow.error = mflow.Error(message)
                yield Log(f"{self.flow.request.host}: {message}")
                yield HttpErrorHook(self.flow)
                yield SendHttp(ResponseProtocolError(self.stream_id, message, ErrorCode.REQUEST_TOO_LARGE),
                               self.context.client)
                self.client_state = self.state_errored
                self.flow.live = False
                return
        yield from consume(self, event)

    capped.airlock_capped = True  # type: ignore[attr-defined]
    # `expect` checks the event types on the wrapped function; ours accepts the same.
    HttpStream.state_consume_request_body = capped  # type: ignore[method-assign]


_install_cap()
