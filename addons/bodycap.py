"""Bodies held whole are capped while they arrive.

A body that is not streamed is collected by mitmproxy before the `request` hook, with
no bound when its length is unknown (chunked, HTTP/2), and mitmproxy's own
body_size_limit is global (it would kill the large uploads we stream). So the hook
`requestheaders` sets a cap per flow (`body_cap`), and mitmproxy's buffering step is
wrapped on import to enforce it: past the cap the request gets 413, the connection
closes and nothing of it goes upstream. A request already refused (its response set)
keeps nothing of its body at all: it is read off the wire and dropped.
"""
from __future__ import annotations

CAP_KEY = "airlock.body_cap"


def body_cap(flow, limit: int) -> None:
    flow.metadata[CAP_KEY] = limit


def _install_cap() -> None:
    from mitmproxy import flow as mflow
    from mitmproxy.proxy.commands import Log
    from mitmproxy.proxy.layers.http import HttpStream
    from mitmproxy.proxy.layers.http._events import ErrorCode, RequestData, ResponseProtocolError
    from mitmproxy.proxy.layers.http._hooks import HttpErrorHook
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
