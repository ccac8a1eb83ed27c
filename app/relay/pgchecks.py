"""What the relay asks the gate, and how it tells the client the answer.

`Checker` decides statements (one `Operation` each) for one session: it re-checks the
token when the store version moves and at least once a second, sends the review NOTICE
at once when the gate holds a statement, carries masks over to cursors, and turns
refusals into ErrorResponses. Startup parameters are checked here too, as the SET
statements they amount to.

A held statement is bound to exactly what will run. In the extended protocol its
parameters arrive only at Bind, so a statement that needs a review passes Parse
("deferred": parsing runs nothing) and is held at each Bind, with that Bind's values.
When the client disconnects or sends a CancelRequest during a hold, the gate withdraws
the statement: nothing reaches the target and the approval stays unused.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Callable

from app.binding import sql_binding
from app.types import MaskSpec, Operation, Verdict

from . import pgwire
from .pgclassify import operations
from .pgreason import reason_set
from .pgmask import NUMBERS, TEXTLIKE
from .pgwire import error_response

# A token is checked again when the store version moves (a revoke bumps it, and the gate
# hears of it at once), and at least this often otherwise (expiry needs no bump).
TOKEN_RECHECK = 1.0
SHOWN_PARAM_CHARS = 2000  # of each parameter, for approvers (the binding covers every byte)
_DISCONNECTED = "the client disconnected"
_CANCELLED = "the client cancelled the statement"


class Checker:
    def __init__(self, session, send: Callable[[bytes], None], flush: Callable[[], None]):
        self.s = session
        self._send = send  # a frame for the client, between the target's frames
        self._flush = flush  # what is buffered for the target goes out before a hold
        self.statements = 0
        self.cursor_masks: tuple[MaskSpec, ...] = ()
        self._holding = False
        self._gone: asyncio.Future | None = None  # completes when the client leaves a hold
        self.verdicts: list[Verdict] = []  # of the last check, one per operation
        self.deferred = False  # the last check found a statement to hold at Bind

    def allowed_again(self, shape) -> bool:
        """Whether a statement of an allowed shape (app/gate/shapes.py) may reuse its verdict now:
        not when the token is due for a re-check, nor when its masks would differ (a
        statement with no tables reads a cursor's rows, masked as the cursor is)."""
        if time.monotonic() - self.s.token_checked >= TOKEN_RECHECK:
            return False
        if shape.masks:
            self.cursor_masks = union(self.cursor_masks, shape.masks)
        elif not shape.has_targets and self.cursor_masks:
            return False
        self.statements += 1
        return True

    def operations(self, text: str) -> list[Operation]:
        return operations(text, self.s.dbname)

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
            elif verdict.status == "approved" and self.s.client.lost:
                # Approved, but the client left before the statement could be sent.
                await self.s.gate.give_back(verdict, _DISCONNECTED)
                return masks, refusal(replace(verdict, action="deny", status="withdrawn")), rules
            rules.append(verdict.rule)
            own = verdict.masks
            if own:
                self.cursor_masks = union(self.cursor_masks, own)
            elif not op.targets and self.cursor_masks:
                # FETCH from a cursor, EXECUTE of a prepared statement: the rows come from
                # a statement checked earlier, so the masks seen so far apply.
                own = self.cursor_masks
            if "copy_to_stdout" in op.attributes:
                refused = _copy_out_refusal(own, verdict)
                if refused is not None:
                    return masks, refused, rules
            masks = union(masks, own)
        return masks, None, rules

    def token_due(self) -> bool:
        s = self.s
        if time.monotonic() - s.token_checked >= TOKEN_RECHECK:
            return True
        stamp = s.gate.stamp()
        return stamp is None or stamp[0] != s.token_version

    async def decide(self, op: Operation, *, hold: float | None = None, defer_review: bool = False) -> Verdict:
        s = self.s
        if self.token_due():
            await s.check_token()
        self.statements += 1
        self._gone = gone = asyncio.get_running_loop().create_future()
        s.client.on_lost = self._client_lost
        if s.reason and not op.reason:
            op = replace(op, reason=s.reason)
        try:
            verdict = await s.gate.decide(s.principal, op, recording=s.rec, run_id=s.run_id, hold=hold,
                                          on_hold=self._on_hold, record_allows=False, gone=gone,
                                          defer_review=defer_review)
            if verdict.action == "allow":
                s.grant_seen = True  # allowed, so granted: a later revoke or expiry ends the session
                reason = reason_set(op.text)
                if reason is not None:
                    s.reason = reason
            return verdict
        finally:
            self._holding = False
            self._gone = None

    def _on_hold(self, review_id: int, url: str) -> None:
        self._flush()
        self._holding = True
        if self.s.client.lost:
            self._client_lost(None)
        self._send(pgwire.notice_response(
            f"airlock: this statement needs approval and is held until a reviewer decides: {url}",
            detail=f"review {review_id}"))
        self.s.record("notice", {"review_id": review_id, "review_url": url})

    def _client_lost(self, exc) -> None:
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(_DISCONNECTED)

    def cancel(self) -> bool:
        """A CancelRequest: True if it ended a hold (otherwise the target gets it)."""
        gone = self._gone
        if self._holding and gone is not None and not gone.done():
            gone.set_result(_CANCELLED)
            return True
        return False

    @staticmethod
    def bound(ops: list[Operation], bind, types: tuple[int, ...], encoding: str) -> list[Operation]:
        """The statement's operations with this Bind's parameters: a review then covers
        exactly the values that will run (every byte, in the binding), and approvers see them."""
        params = bind.params
        formats = [bind.param_format(i) for i in range(len(params))]
        shown = tuple(_shown_param(v, formats[i], types[i] if i < len(types) else 0, encoding)
                      for i, v in enumerate(params))
        return [replace(op, params=shown, binding=sql_binding(op, params, formats, types)) for op in ops]

    def masker(self, masks: tuple[MaskSpec, ...]):
        if not masks:
            return None
        masker = self.s.gate.masker(masks)
        return masker if masker.active else None

    async def _granted(self) -> bool:
        s = self.s
        return any(t.name == s.dbname for t in await s.gate.connections_for(s.principal, "postgres"))

    async def check_settings(self, params: dict[str, str]) -> str | None:
        """Startup parameters are settings (`options=-c role=admin` too): each passes the
        gate as a SET. The reason for refusing, or None."""
        try:
            sets = settings_of(params)
        except ValueError as exc:
            return str(exc)
        if sets and not await self._granted():
            # Without a grant the refusal is of the login itself: record it as such, not
            # as a SET the client never sent as a statement.
            login = Operation(protocol="postgres", connection=self.s.dbname, kind="login",
                              text=f"login to {self.s.dbname} as {self.s.user}")
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


def _copy_out_refusal(masks: tuple[MaskSpec, ...], verdict: Verdict) -> bytes | None:
    # COPY rows travel as CopyData, which the relay cannot mask; and COPY TO STDOUT
    # exports whole tables, so it needs a rule that allows it by name.
    if masks:
        return error_response("42501", "airlock: COPY ... TO STDOUT is refused because a mask applies to its "
                              f"rows (rule {masks[0].rule}); use SELECT instead")
    if verdict.rule is None:
        return error_response("42501", "airlock: COPY ... TO STDOUT needs a policy rule that allows it "
                              "(match attributes: [copy_to_stdout])")
    return None


def mask_names(masks: tuple[MaskSpec, ...]) -> list[str]:
    return sorted({m.rule for m in masks})


def union(a: tuple[MaskSpec, ...], b: tuple[MaskSpec, ...]) -> tuple[MaskSpec, ...]:
    if not a:
        return b
    if not b or b == a:
        return a
    return a + tuple(m for m in b if m not in a)


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
