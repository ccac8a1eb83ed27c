"""What to do with a body under a mask verdict, by its media type (pure).

Detectors read text and JSON. Media they cannot read (images, archives, PDF, binary
WebSocket messages) would only be corrupted by masking, and passing them on unmasked
would skip a mask silently. So such a body is refused, unless every mask rule of the
verdict names its media type in `unmasked_types` (globs): then it passes, with only the
connection's injected credentials scrubbed from it. Adapters ask `body_plan` and do what
it says; they decide nothing about it themselves.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from app.types import MaskSpec

BINARY_MESSAGE = "application/octet-stream"  # a binary WebSocket message has no type of its own
_BINARY_PREFIXES = ("image/", "audio/", "video/", "font/")
_BINARY_TYPES = frozenset({"application/zip", "application/gzip", "application/x-gzip", "application/x-tar",
                           "application/x-7z-compressed", "application/pdf", "application/wasm"})


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_binary(content_type: str | None) -> bool:
    """Media whose bytes detectors cannot read: masking them would only corrupt them."""
    media = media_type(content_type)
    return media.startswith(_BINARY_PREFIXES) or media in _BINARY_TYPES


@dataclass(frozen=True, slots=True)
class BodyPlan:
    """"mask": run the masker over it; "scrub": pass it with credentials scrubbed only
    (no masks apply, or every mask rule lets this media through); "refuse": `reason`."""

    action: Literal["mask", "scrub", "refuse"]
    reason: str = ""


MASK, SCRUB = BodyPlan("mask"), BodyPlan("scrub")


def body_plan(masks: tuple[MaskSpec, ...], content_type: str | None) -> BodyPlan:
    """The plan for a body of `content_type` under the verdict's active `masks`."""
    if not masks:
        return SCRUB
    if not is_binary(content_type):
        return MASK
    return _unreadable(masks, media_type(content_type), "the response")


def message_plan(masks: tuple[MaskSpec, ...], is_text: bool) -> BodyPlan:
    """The plan for a WebSocket message from the server: text is masked (as JSON when it
    looks like it, else as text); a binary message counts as `BINARY_MESSAGE` media."""
    if not masks:
        return SCRUB
    return MASK if is_text else _unreadable(masks, BINARY_MESSAGE, "a binary WebSocket message")


def _unreadable(masks: tuple[MaskSpec, ...], media: str, what: str) -> BodyPlan:
    if all(any(fnmatch.fnmatchcase(media, t) for t in m.unmasked_types) for m in masks):
        return SCRUB
    return BodyPlan("refuse", f"{what} is {media}, which cannot be masked; a mask rule may let it through "
                              f"with unmasked_types: [{media}]")
