"""Masks that follow rows read without naming a table (pure).

A FETCH from a cursor or an EXECUTE of a prepared statement names no table: its rows
come from a statement checked earlier, so every mask seen so far in the session
applies to them. `CursorMasks` keeps that union, per session.
"""
from __future__ import annotations

from app.types import MaskSpec


def union(a: tuple[MaskSpec, ...], b: tuple[MaskSpec, ...]) -> tuple[MaskSpec, ...]:
    """The masks of both, each once, in the order first seen."""
    if not a:
        return b
    if not b or b == a:
        return a
    return a + tuple(m for m in b if m not in a)


def mask_names(masks: tuple[MaskSpec, ...]) -> list[str]:
    return sorted({m.rule for m in masks})


class CursorMasks:
    def __init__(self) -> None:
        self.seen: tuple[MaskSpec, ...] = ()

    def applying(self, own: tuple[MaskSpec, ...], has_targets: bool) -> tuple[MaskSpec, ...]:
        """The masks for a statement's rows: its own (remembered for later cursor reads),
        or, when it names no table, every mask seen so far."""
        if own:
            self.seen = union(self.seen, own)
            return own
        if not has_targets and self.seen:
            return self.seen
        return own

    def reusable(self, own: tuple[MaskSpec, ...], has_targets: bool) -> bool:
        """Whether a remembered verdict with these masks still masks what it would now: not
        for a statement without tables once a cursor may carry masks it did not have."""
        if own:
            self.seen = union(self.seen, own)
            return True
        return has_targets or not self.seen
