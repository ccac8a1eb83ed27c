"""The gate: the one facade every adapter calls, and the only place decisions are made.

    core.py      Gate: identity, targets, decide / decide_parts, the policy snapshot
    verdicts.py  the verdict cache (pure)
    shapes.py    verdicts by statement shape, for the relay's fast path
    holds.py     review holds: standing approvals, the wait (watching the grant), its outcome
    store.py     GateStore: what the gate reads and writes (a Protocol)
    sqlstore.py  the SQLAlchemy GateStore
"""
from __future__ import annotations

import asyncio
import weakref

from .core import AUTH_AUDIT_EVERY, NO_ALLOW_RULE, VERSION_TTL, Gate, Unavailable, decision_event
from .holds import OnHold, review_fingerprint
from .store import GateStore, Recording
from .verdicts import VERDICT_CACHE_SIZE

__all__ = ["AUTH_AUDIT_EVERY", "NO_ALLOW_RULE", "VERDICT_CACHE_SIZE", "VERSION_TTL", "Gate", "GateStore", "OnHold",
           "Recording", "Unavailable", "decision_event", "get_gate", "review_fingerprint"]

_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = weakref.WeakKeyDictionary()


def get_gate() -> Gate:
    """One gate per event loop (mitmproxy and the relay each run their own), on the store."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = Gate()
    return gate
