"""What the relay asks the gate, and how it tells the client the answer.

`StatementChecker` decides statements (one `Operation` each) for one session, on the
core's checker (app/relay/checker.py: token re-check, hold with the client watched,
cancel): it sends the review NOTICE at once when the gate holds a statement, carries
masks over to cursors, and turns refusals into ErrorResponses. Startup parameters are checked here too, as the SET
statements they amount to.

A held statement is bound to exactly what will run. In the extended protocol its
parameters arrive only at Bind, so a statement that needs a review passes Parse
("deferred": parsing runs nothing) and is held at each Bind, with that Bind's values.
When the client disconnects or sends a CancelRequest during a hold, the gate withdraws
the statement: nothing reaches the target and the approval stays unused.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from app.binding import sql_binding
from app.masking.cursors import CursorMasks, mask_names, union
from app.policy.sql import copy_out_refusal
from app.sql import classify_postgres_cached
from app.types import MaskSpec, Operation, Verdict

from ..checker import Checker
from ..session import RelaySession
from . import protocol
from .masking import NUMBERS, TEXTLIKE
from .protocol import error_response
from .reason import reason_set

SHOWN_PARAM_CHARS = 2000  # of each parameter, for approvers (the binding covers every byte)

__all__ = ["StatementChecker", "binary_refusal", "mask_names", "operations", "refusal", "settings_of", "union"]


def operations(text: str, connection: str) -> list[Operation]:
    """The gate's Operations for every statement of `text` on `connection` (classified by
    app.sql, with its literal-free cache)."""
    return [Operation(protocol="postgres", connection=connection, kind=st.kind, text=st.text,
                      targets=st.tables + st.functions, attributes=st.attributes, fingerprint=st.fingerprint)
            for st in classify_postgres_cached(text)]


class StatementChecker(Checker):
    """The core's checker (app/relay/checker.py), for SQL statements: a hold shows as a
    NOTICE between the target's frames, masks carry over to cursors, and refusals
    become ErrorResponses."""

    def __init__(self, session: RelaySession, send: Callable[[bytes], None], flush: Callable[[], None]):
        super().__init__(session, on_hold=self._show_hold)
        self._send = send  # a frame for the client, between the target's frames
        self._flush = flush  # what is buffered for the target goes out before a hold
        self.connection = session.connection_name
        self.cursors = CursorMasks()  # masks that carry over to FETCH and EXECUTE (app.masking.cursors)
        self.verdicts: list[Verdict] = []  # of the last check, one per operation
        self.deferred = False  # the last check found a statement to hold at Bind

    def allowed_again(self, shape) -> bool:
        """Whether a statement of an allowed shape (app/gate/shapes.py) may reuse its verdict now:
        not when the token is due for a re-check, nor when its masks would differ (a
        statement with no tables reads a cursor's rows, masked as the cursor is)."""
        token = self.session.token
        if token is None or not token.fresh():
            return False
        if not self.cursors.reusable(shape.masks, shape.has_targets):
            return False
        self.statements += 1
        return True

    def operations(self, text: str) -> list[Operation]:
        return operations(text, self.connection)

    async def check(self, ops: list[Operation], *, defer_review: bool = False,
                    ) -> tuple[tuple[MaskSpec, ...], bytes | None, list[str | None]]:
        """(masks, refusal, allow rule per op): refusal is an ErrorResponse if any op is refused.

        `defer_review` (Parse): a statement that needs a review counts as allowed for now
        and sets `self.deferred`; the caller must check it again, bound, before it runs."""
        masks: tuple[MaskSpec, ...] = ()
        rules: list[str | None] = []
        self.verdicts = verdicts = []
        self.deferred = False
        for op in ops:
            verdict = await self.decide(op, defer_review=defer_review)
            verdicts.append(verdict)
            if verdict.status == "deferred":
                self.deferred = True
            elif verdict.action != "allow":
                return masks, refusal(verdict), rules
            else:
                withdrawn = await self.give_back_if_gone(verdict)
                if withdrawn is not None:
                    return masks, refusal(withdrawn), rules
            rules.append(verdict.rule)
            own = self.cursors.applying(verdict.masks, bool(op.targets))
            refused = copy_out_refusal(op.attributes, own, verdict.rule)
            if refused is not None:
                return masks, error_response("42501", f"airlock: {refused}"), rules
            masks = union(masks, own)
        return masks, None, rules

    async def decide(self, op: Operation, *, hold: float | None = None, defer_review: bool = False) -> Verdict:
        verdict = await super().decide(op, hold=hold, defer_review=defer_review)
        if verdict.action == "allow":
            reason = reason_set(op.text)
            if reason is not None:
                self.session.reason = reason
        return verdict

    def _show_hold(self, review_id: int, url: str) -> None:
        self._flush()
        self._send(protocol.notice_response(
            f"airlock: this statement needs approval and is held until a reviewer decides: {url}",
            detail=f"review {review_id}"))

    @staticmethod
    def bound(ops: list[Operation], bind, types: tuple[int, ...], encoding: str) -> list[Operation]:
        """The statement's operations with this Bind's parameters: a review then covers
        exactly the values that will run (every byte, in the binding), and approvers see them."""
        params = bind.params
        formats = [bind.param_format(i) for i in range(len(params))]
        shown = tuple(_shown_param(v, formats[i], types[i] if i < len(types) else 0, encoding)
                      for i, v in enumerate(params))
        return [replace(op, params=shown, binding=sql_binding(op, params, formats, types)) for op in ops]

    async def check_settings(self, params: dict[str, str]) -> str | None:
        """Startup parameters are settings (`options=-c role=admin` too): each passes the
        gate as a SET. The reason for refusing, or None."""
        try:
            sets = settings_of(params)
        except ValueError as exc:
            return str(exc)
        s = self.session
        if sets and not await s.granted():
            # Without a grant the refusal is of the login itself: record it as such, not
            # as a SET the client never sent as a statement.
            login = Operation(protocol="postgres", connection=self.connection, kind="login",
                              text=f"login to {self.connection} as {s.user}")
            verdict = await self.decide(login, hold=0)
            if verdict.action != "allow":
                return f"login refused: {verdict.message}"
        for name, value in sets:
            sql = f'SET "{name.replace(chr(34), chr(34) * 2)}" TO \'{value.replace(chr(39), chr(39) * 2)}\''
            for op in self.operations(sql):
                verdict = await self.decide(op, hold=0)
                if verdict.action != "allow":
                    rule = f' by rule "{verdict.rule}"' if verdict.rule else ""
                    return f"the startup setting {name} was refused{rule}: {verdict.message}"
        return None


def refusal(v: Verdict) -> bytes:
    if v.status == "withdrawn":
        return error_response("57014", "canceling statement due to user request", detail=f"airlock: {v.message}")
    if v.action == "review":
        return error_response("42501", f"airlock: review {v.review_id} is still pending; retry once it is "
                              f"approved: {v.review_url}", detail=f"review {v.review_id}",
                              hint=f"retry after {v.retry_after or 30} seconds")
    if v.status == "error":
        detail = f"review {v.review_id}" if v.review_id is not None else None
        return error_response("58000", f"airlock: {v.message}", detail=detail)
    if v.review_id is not None:
        # The approvers' reason is for the runtime: it may fix the request and ask again.
        detail = f"review {v.review_id}" + (f" was {v.status}: {v.reason}" if v.reason else "")
        return error_response("42501", f"airlock: review {v.review_id} was {v.status}: {v.review_url}",
                              detail=detail)
    return error_response("42501", f'airlock: denied by rule "{v.rule}": {v.message}', detail=f"rule {v.rule}")


def _shown_param(value, fmt: int, oid: int, encoding: str) -> str | None:
    if value is None:
        return None
    if fmt:
        number = NUMBERS.get(oid)
        if number is not None and len(value) == number.size:
            return str(number.unpack(value)[0])
        if oid == 16 and len(value) == 1:
            return "true" if value[0] else "false"
        if oid not in TEXTLIKE:
            return f"<binary, {len(value)} bytes: {bytes(value[:32]).hex()}{'…' if len(value) > 32 else ''}>"
        encoding = "utf-8"
    text = str(value[:SHOWN_PARAM_CHARS * 4], encoding, "replace")
    if len(text) > SHOWN_PARAM_CHARS or len(value) > SHOWN_PARAM_CHARS * 4:
        text = text[:SHOWN_PARAM_CHARS] + f"… ({len(value)} bytes in all)"
    return text


def binary_refusal(plan) -> bytes:
    names = ", ".join(plan.columns[i] for i in plan.nulls)
    return error_response("42501", f"airlock: masked column(s) {names} requested in binary format",
                          hint="ask for text format, or set AIRLOCK_RELAY_MASKED_BINARY=null")


def settings_of(params: dict[str, str]) -> list[tuple[str, str]]:
    """(name, value) for every startup parameter, `options` unpacked (-c a=b, --a=b)."""
    out = []
    for key, value in params.items():
        if key != "options":
            out.append((key, value))
            continue
        words = _split_options(value)
        i = 0
        while i < len(words):
            word = words[i]
            if word == "-c" and i + 1 < len(words):
                i += 1
                word = "--" + words[i]
            elif word.startswith("-c"):
                word = "--" + word[2:]
            if not word.startswith("--") or "=" not in word:
                raise ValueError(f"startup option {word!r} is not allowed; only -c name=value")
            name, _, setting = word[2:].partition("=")
            out.append((name.replace("-", "_"), setting))
            i += 1
    return out


def _split_options(value: str) -> list[str]:
    """Words of `options` exactly as PostgreSQL splits them (pg_split_opts): whitespace
    separates, a backslash takes the next character literally, quotes mean nothing."""
    words, word, escaped = [], [], False
    for ch in value:
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(ch)
    if word:
        words.append("".join(word))
    return words
