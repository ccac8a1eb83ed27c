"""One bounded cache for the per-process caches that functools.lru_cache cannot serve
(per-instance caches, entries checked for validity on the way out, a value computed
by code that may refuse to cache it).

Reads are plain dict reads (`get`, `in`), as fast as a dict's, and do not reorder, so
the oldest entry put goes first; `touch` moves a hit to the back where reuse should
keep an entry (least recently used order). Safe to share between threads under the
GIL: every step is one OrderedDict operation, and a step that loses a race (an entry
evicted by another thread meanwhile) is skipped, never raised.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(OrderedDict[K, V]):
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a bounded cache holds at least one entry")
        super().__init__()
        self.size = size

    def put(self, key: K, value: V) -> V:
        """Store `value` (last in line to go) and drop the oldest entries beyond the bound."""
        self[key] = value
        self.touch(key)
        while len(self) > self.size:
            try:
                self.popitem(last=False)
            except KeyError:  # emptied by another thread
                break
        return value

    def touch(self, key: K) -> None:
        """Keep `key` longest: move it to the back of the line."""
        try:
            self.move_to_end(key)
        except KeyError:  # evicted by another thread: nothing to keep
            pass
