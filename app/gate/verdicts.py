"""The gate's verdict cache: pure, keyed by what a verdict depends on.

Verdicts repeat: a runtime sends the same few operations with different literals. A
verdict is keyed by the policy version and the minute (rules may have time windows),
the principal and the operation; the caller clears the cache when the version moves.

Operations that differ only in their text (literals) share a verdict when no rule that
could apply to them reads the text, command, path or body: the cache first looks them
up by shape, without the text.
"""
from __future__ import annotations

import time
from collections import OrderedDict

from app.policy import CompiledPolicy, evaluate
from app.types import Operation, Principal, Verdict

VERDICT_CACHE_SIZE = 4096
_TEXTUAL = object()  # under a shape key: operations of this shape are decided by their text


class VerdictCache:
    def __init__(self, size: int = VERDICT_CACHE_SIZE):
        self._size = size
        self._verdicts: OrderedDict[tuple, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self._verdicts)

    def clear(self) -> None:
        self._verdicts.clear()

    def evaluate(self, policy: CompiledPolicy, version: int, principal: Principal, op: Operation) -> Verdict:
        if op.body is not None:  # unhashable and rarely repeated: don't cache
            return evaluate(policy, op, principal)
        minute = int(time.time() // 60)
        verdicts = self._verdicts
        shape = (version, minute, principal, op.protocol, op.connection, op.kind, op.fingerprint, op.targets,
                 op.attributes, op.method, op.host)
        cached = verdicts.get(shape)
        if cached is not None and cached is not _TEXTUAL:
            verdicts.move_to_end(shape)
            return cached  # type: ignore[return-value]
        if cached is None:
            if policy.depends_on_text(op, principal):
                verdicts[shape] = _TEXTUAL
            else:
                verdict = evaluate(policy, op, principal)
                self._remember(shape, verdict)
                return verdict
        key = (version, minute, principal, op)
        cached = verdicts.get(key)
        if cached is not None:
            verdicts.move_to_end(key)
            return cached  # type: ignore[return-value]
        verdict = evaluate(policy, op, principal)
        self._remember(key, verdict)
        return verdict

    def _remember(self, key: tuple, verdict: Verdict) -> None:
        self._verdicts[key] = verdict
        if len(self._verdicts) > self._size:
            self._verdicts.popitem(last=False)
