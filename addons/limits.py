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

