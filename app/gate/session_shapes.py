"""Allowed statement shapes of one MySQL session: the gate's verdicts looked up by text,
for the MySQL relay's fast path.

A runtime repeats a handful of statements with different numbers in them (PyMySQL and
most drivers put parameters into the text). The first statement of a shape takes the
full path: classification in the session's sql_mode, then the gate. When the gate
allowed it outright, by a rule that does not read the text, the session's memory keeps
the shape (app/sql/mysql_shapes.py) with the gate's stamp; later statements of that
shape reuse the verdict, skipping both, for as long as the stamp holds (the same policy
version, the same minute, a store check younger than the gate's version TTL).

Unlike PostgreSQL's shapes (shapes.py, shared by a principal's sessions on a connection),
these are kept per session: a MySQL session's sql_mode and character set decide how its
text reads, and the relay forgets them all when either may have changed. Every statement
that is not a plain read or write (USE, SET, CALL, transactions, anything that changes
how the server reads text) takes the full path.
"""
from __future__ import annotations

from app.sql.cache import MAX_TEXT
from app.sql.mysql_shapes import shape_key, shape_of
from app.types import Operation, Verdict

MAX_SHAPES = 256  # per session
_LEADS = ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE")


class Shape:
    __slots__ = ("stamp", "rule", "masks", "kind")

    def __init__(self, stamp, verdict: Verdict, kind: str):
        self.stamp = stamp
        self.rule = verdict.rule
        self.masks = verdict.masks
        self.kind = kind


def _plain_allow(op: Operation, verdict: Verdict, stamp) -> bool:
    """The gate allowed `op` outright under a known stamp, and it is one plain read or write."""
    words = op.text.split(None, 1)
    return (stamp is not None and verdict.action == "allow" and verdict.status is None
            and verdict.review_id is None and op.kind in ("read", "write")
            and bool(words) and words[0].upper() in _LEADS)


class _StampedMemory:
    """Verdicts kept under the gate's stamp they were decided with: a new policy version
    or minute makes every one stale at once."""

    def __init__(self, gate) -> None:
        self.gate = gate
        self._kept: dict = {}

    def _fresh(self, key) -> Shape | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        current = self.gate.stamp()
        if kept.stamp != current:
            if current is not None:  # None: the gate must look at the store first
                self._kept.clear()
            return None
        return kept

    def _keep(self, key, shape: Shape) -> None:
        if len(self._kept) >= MAX_SHAPES:
            self._kept.clear()
        self._kept[key] = shape

    def clear(self) -> None:
        """The session's sql_mode or character set may have changed, or its token's
        re-check failed: decide again."""
        self._kept.clear()


class SessionShapes(_StampedMemory):
    def lookup(self, text: str) -> Shape | None:
        """The remembered verdict for `text`'s shape, if its stamp still holds."""
        if not self._kept or len(text) > MAX_TEXT:
            return None
        return self._fresh(shape_key(text))

    def remember(self, text: str, op: Operation, verdict: Verdict, stamp, principal) -> None:
        """After the full path allowed `text`, one statement `op`, with `verdict`."""
        if not _plain_allow(op, verdict, stamp):
            return
        key = shape_of(text)
        if key is not None and self.gate.shares_verdict(principal, op):
            self._keep(key, Shape(stamp, verdict, op.kind))


class PreparedVerdicts(_StampedMemory):
    """The gate's verdicts for a MySQL session's prepared statements, by statement id.

    A prepared statement's text is fixed at COM_STMT_PREPARE; each COM_STMT_EXECUTE brings
    only parameter values. No policy rule reads parameters (a rule matches protocol,
    connection, who, kind, tables, attributes, text, time; never `Operation.params` or
    `binding`), so under one stamp every execute of a statement gets the verdict of the
    first. That is remembered only when the gate allowed it outright: no hold or approval
    (an approval binds the exact parameters the approver saw), no masks (the masked path
    decides per answer), a plain read or write (nothing that may change how the server
    reads text or what the session is). A stamp that moved, or None (the gate must look
    at the store first), sends the execute back through the gate.

    The relay forgets a statement at COM_STMT_CLOSE (and when the server hands its id to
    a new one), and all of them when the server's sql_mode or character set may have
    changed, at COM_RESET_CONNECTION, and when the token's re-check fails. Not at
    COM_STMT_RESET: it drops long data and a cursor, never the statement's text, and
    mysql-connector sends it before every execute.
    """

    def lookup(self, stmt_id: int) -> Shape | None:
        """The remembered verdict for this statement, if its stamp still holds."""
        return self._fresh(stmt_id)

    def remember(self, stmt_id: int, op: Operation, verdict: Verdict, stamp) -> bool:
        """After the gate allowed an execute of `stmt_id` (one statement, `op`) under
        `stamp` (taken before it decided, and still the gate's after)."""
        if not _plain_allow(op, verdict, stamp) or verdict.masks or op.body is not None:
            return False
        self._keep(stmt_id, Shape(stamp, verdict, op.kind))
        return True

    def forget(self, stmt_id: int) -> None:
        self._kept.pop(stmt_id, None)
