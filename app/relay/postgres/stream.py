"""The target -> client direction: scan frames, keep track of what each one answers,
mask rows, and record results.

Every message the relay forwards to the target that the target answers puts a
`Pending` on a queue, in order. PostgreSQL answers in order too, so the head of the
queue always says what the next answer belongs to: which portal's rows are arriving
(and so which mask plan applies), which RowDescription the relay asked for itself
(and swallows), which error stands in for a refused statement. An answer the queue
does not expect means the relay lost track; it then closes the connection rather
than guess how to mask (fail closed).

Fast paths: a simple query's whole answer in one chunk goes out at once, and the
recording writer decodes it (answers.py: WholeAnswers, and the C fast lane's interface). Otherwise, when nothing
applies to the rows of the current result (no mask, row sample full), DataRows are
forwarded without being parsed, even across chunk boundaries, and whole chunks go out
as received.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol

from app.masking import Masker

from . import masking
from .answers import STATUS as _STATUS
from .answers import WholeAnswers, cached_column_names
from .parity import Barriers
from .scan import PASS, Desync, FrameScanner
from .state import BIND, CLOSE, COPY_END, DESCRIBE, EXECUTE, PARSE, QUERY, REFUSE, SYNC, Pending, Portal, statement_of
from .protocol import command_tag, parse_fields, parse_row_description, sample_cells, sample_row


class _Result:
    """One statement's answer while it streams back (for masking and the recording)."""

    __slots__ = ("masker", "plan", "columns", "sample", "rows", "masked")

    def __init__(self, masker, plan, columns):
        self.masker, self.plan, self.columns = masker, plan, columns
        self.sample: list = []
        self.rows = 0
        self.masked = 0  # values the masker actually replaced in this result


class StreamConversation(Protocol):
    """All the target stream reads of the conversation it answers for (conversation.py;
    tests/unit/test_pg_whole_answers.py fakes exactly this)."""

    barriers: Barriers  # while they watch, every ReadyForQuery is reported (target_ready)
    def record_output(self, event: dict) -> None: ...
    def record_answer(self, sql: str, rule: str | None, masks: list[str], ms: float, answer: bytes,
                      sample_rows: int, masked: int = 0) -> None: ...
    def target_idle(self, batch: int) -> None: ...
    def target_ready(self, batch: int, status: bytes) -> None: ...
    def parameter_changed(self, body: bytes) -> None: ...
    def binary_refusal(self, plan) -> bytes: ...
    def lost_track(self, reason: str) -> None: ...


class TargetStream(WholeAnswers, FrameScanner):
    def __init__(self, conversation: StreamConversation, client, *, sample_rows: int, max_frame: int,
                 refuse_binary: bool):
        super().__init__(client, max_frame)
        self.conversation = conversation
        self.sample_rows = sample_rows
        self.refuse_binary = refuse_binary
        self.queue: deque[Pending] = deque()
        self.status = b"I"
        self.copy_in_extended = False  # the target ignores Syncs until the copy ends
        self._result: _Result | None = None
        self._since = time.monotonic()
        self._skipping = False  # the target saw an error and ignores everything until Sync
        self._handlers = self.handlers = {kind: f.__get__(self) for kind, f in _HANDLERS.items()}
        self._dropping = {0x5A: self._ready}  # after a refused binary result: all but Z dropped
        self.lane = None  # the conversation's fast lane (fastlane.py), while it has one
        self._drained: asyncio.Future | None = None  # see `drain`

    # -- called by the conversation and the session --------------------------------

    def expect(self, kind: int, item=None, swallow: bool = False, refusal: bytes | None = None,
               batch: int = 0, since: float | None = None) -> None:
        """What the target answers next; `since`: when the statement was sent, if not now
        (one the fast lane hands back)."""
        lane = self.lane
        if lane is not None and lane.pending:
            lane.materialize()  # the statement in flight on the lane answers first
        if since is not None:
            self._since = since
        elif kind in (EXECUTE, QUERY) and not self.queue:
            self._since = time.monotonic()
        entry = Pending(kind, item, swallow, refusal, batch)
        if self._skipping:  # the target ignores everything up to the next Sync
            if kind != SYNC:
                self._abandon(entry)  # never answered: nobody may wait for it
                return
            self._skipping = False
        self.queue.append(entry)

    def data(self, chunk: bytes) -> None:
        if not self._whole_plain_answer(chunk):
            super().data(chunk)
        if self._drained is not None and not self.queue and not self._drained.done():
            self._drained.set_result(None)

    def drain(self) -> asyncio.Future | None:
        """The client has gone, but what it sent runs on the target all the same: a future
        done once every answer the relay waits for has come back (each statement is then
        recorded with its outcome), or None when nothing is in flight."""
        lane = self.lane
        if lane is not None and lane.pending:
            lane.materialize()
        if not self.queue:
            return None
        self._drained = asyncio.get_running_loop().create_future()
        return self._drained

    # -- one message ----------------------------------------------------------------

    def unhandled(self, kind: int, body):
        if self.handlers is self._dropping:
            return b""
        raise Desync(f"unexpected message {chr(kind)!r} from the target")

    def failed(self, reason: str) -> None:
        self.conversation.lost_track(reason)

    def _head(self) -> Pending | None:
        q = self.queue
        while q and q[0].kind == COPY_END:
            q.popleft()
        return q[0] if q else None

    def _ready(self, body):  # Z
        q = self.queue
        while q:
            entry = q.popleft()
            if entry.kind in (SYNC, QUERY):
                break
            self._abandon(entry)
        else:
            raise Desync("ReadyForQuery that answers nothing")
        status = _STATUS.get(body[0]) if len(body) == 1 else None  # no slice, no copy
        if status is None:
            status = bytes(body[:1])
        self.status = status
        if entry.kind == QUERY and entry.item is not None:
            for text, _ in entry.item.statements:  # after an error, the rest never ran
                self.conversation.record_output({"sql": text, "not_run": True})
        self._result = None
        self.stream_rows = self.copy_in_extended = self._skipping = False
        self.handlers = self._handlers
        if q and q[0].kind in (EXECUTE, QUERY):
            self._since = time.monotonic()
        if status == b"I":
            self.conversation.target_idle(entry.batch)
        if self.conversation.barriers.watching:
            self.conversation.target_ready(entry.batch, status)
        return PASS

    def _error(self, body):  # E
        head = self._head()
        fields = parse_fields(body)
        if head is None:
            return PASS  # e.g. a FATAL on shutdown: nothing was waiting for it
        if head.kind == REFUSE:
            self.queue.popleft()
            if head.item:  # refused in the extended protocol: the target now skips to Sync
                self._skip_to_sync()
            return head.refusal
        self._finish(head, error=fields)
        if head.kind != QUERY:  # a simple query's error ends that statement; Z follows
            self._skip_to_sync()
        return PASS

    def _skip_to_sync(self) -> None:
        """After an error in the extended protocol the target ignores every message up to
        the next Sync, simple queries included: none of them will be answered."""
        q = self.queue
        while q and q[0].kind != SYNC:
            self._abandon(q.popleft())
        self._skipping = not q  # no Sync sent yet: what comes next is ignored too

    def _abandon(self, entry: Pending) -> None:
        """The target skipped this message after an error."""
        if entry.kind in (PARSE, BIND):
            entry.item.settle(False)
        elif entry.kind == DESCRIBE and entry.swallow:
            fut = entry.item.described
            if fut is not None and not fut.done():
                fut.set_result(False)
        elif entry.kind == QUERY and entry.item is not None:
            for text, _ in entry.item.statements:
                self.conversation.record_output({"sql": text, "not_run": True})

    def _expect_head(self, *kinds: int) -> Pending:
        head = self._head()
        if head is None or head.kind not in kinds:
            raise Desync("an answer the relay did not expect")
        return head

    def _param_description(self, body):  # t
        head = self._expect_head(DESCRIBE)
        return b"" if head.swallow else PASS

    def _row_description(self, body):  # T
        q = self.queue
        head = q[0] if q and q[0].kind == QUERY else self._expect_head(DESCRIBE, QUERY)
        if head.kind == QUERY:
            masker = head.item.masker if head.item is not None else None
            if masker is None:  # nothing to mask: column names only if the sample needs them
                self._result = _Result(None, None, bytes(body))  # as _start, one call less
                self.stream_rows = self.sample_rows <= 0
                return PASS
            plan, names, rewritten = masking.query_plan(masker, body)
            self._start(masker, plan, names)
            if plan is not None and plan.nulls and self.refuse_binary:
                self.handlers = self._dropping  # a binary cursor FETCH; refused below
                return self.conversation.binary_refusal(plan)
            return rewritten if rewritten is not None else PASS
        return self._described(head, parse_row_description(body))

    def _no_data(self, body):  # n
        head = self._expect_head(DESCRIBE)
        return self._described(head, [])

    def _described(self, head: Pending, fields):
        self.queue.popleft()
        item = head.item
        if item is None:
            return PASS
        if isinstance(item, Masker):
            plan = masking.plan_rows(item, fields) if fields else None
        elif isinstance(item, Portal):
            masker = item.prepared.masker
            plan = masking.plan_rows(masker, fields) if masker is not None and fields else None
        else:
            item.fields = fields
            if item.described is not None and not item.described.done():
                item.described.set_result(True)
            masker = item.masker
            plan = masking.plan_rows(masker, fields) if masker is not None and fields else None
        if head.swallow:
            return b""
        if plan is not None and plan.retype:
            return masking.rewrite_description(fields, plan)
        return PASS

    def _start(self, masker, plan, columns) -> None:
        """A result begins. `columns`: names, or a raw RowDescription decoded only if needed."""
        plain = plan is None or not plan.needs_work
        self._result = _Result(masker if not plain else None, plan if not plain else None, columns)
        self.stream_rows = plain and self.sample_rows <= 0

    def _data_row(self, body):  # D
        r = self._result
        if r is None:
            head = self._expect_head(EXECUTE)
            portal = head.item
            if portal.prepared.masker is not None and portal.plan is None:
                raise Desync("rows of a masked statement whose columns are unknown")
            fields = portal.prepared.fields
            self._start(portal.prepared.masker, portal.plan, [f.name for f in fields] if fields else None)
            r = self._result
        r.rows += 1
        if r.plan is not None:
            masker = r.masker
            before = masker.masked  # shared by every session on this loop: the difference is this row's
            frame, values = masking.mask_row(masker, r.plan, body)
            r.masked += masker.masked - before
            if len(r.sample) < self.sample_rows:
                r.sample.append(sample_cells(values))
            return frame
        if len(r.sample) < self.sample_rows:
            r.sample.append(sample_row(body))
        else:
            self.stream_rows = True  # sample full: stop parsing rows
        return PASS

    def _complete_command(self, body):  # C
        q = self.queue
        head = q[0] if q and q[0].kind in (QUERY, EXECUTE) else self._expect_head(EXECUTE, QUERY)
        key = bytes(body)
        tag, rows = command_tag(key)
        self._finish(head, tag, rows)
        if head.kind == EXECUTE:
            self.queue.popleft()
        return PASS

    def _empty_query(self, body):  # I
        head = self._expect_head(EXECUTE, QUERY)
        self._finish(head)
        if head.kind == EXECUTE:
            self.queue.popleft()
        return PASS

    def _suspended(self, body):  # s
        head = self._expect_head(EXECUTE)
        self._finish(head, suspended=True)
        self.queue.popleft()
        return PASS

    def _copy_in(self, body):  # G
        head = self._expect_head(EXECUTE, QUERY)
        # The target ignores Sync while it copies in; drop those we queued meanwhile.
        q = self.queue
        kept = [q.popleft()]
        while q and q[0].kind == SYNC:
            q.popleft()
        if q and q[0].kind == COPY_END:
            q.popleft()
        elif not q:
            self.copy_in_extended = head.kind == EXECUTE
        q.extendleft(reversed(kept))
        return PASS

    def _copy_out(self, body):  # H
        head = self._expect_head(EXECUTE, QUERY)
        masker = head.item.prepared.masker if head.kind == EXECUTE else head.item.masker
        if masker is not None:
            raise Desync("COPY TO STDOUT of a masked statement")  # refused earlier; never stream it
        self._start(None, None, None)
        return PASS

    def _finish(self, head: Pending, tag: str = "", rows: int | None = None, error: dict | None = None,
                suspended: bool = False) -> None:
        """One statement is done: record it with its outcome (one event per statement)."""
        r = self._result
        self._result = None
        self.stream_rows = False
        now = time.monotonic()
        event = statement_of(head)
        event["ms"] = int((now - self._since) * 1e6) / 1000  # round(ms, 3) at half the cost
        if r is not None and r.masked:  # only when a value was replaced, not whenever a mask rule applied
            event["masked"] = r.masked  # (where answers.answer_json writes it)
        self._since = now
        if tag:
            event["tag"] = tag
        if rows is not None:
            event["rows"] = rows
        elif r is not None:
            event["rows"] = r.rows
        if r is not None:
            if r.sample:
                columns = r.columns
                if isinstance(columns, bytes):
                    columns = cached_column_names(columns)
                event["columns"] = columns
                event["sample"] = r.sample
                if r.rows > len(r.sample):
                    event["truncated"] = True
        if suspended:
            event["suspended"] = True
        if error is not None:
            event["error"] = {"code": error.get("C"), "message": error.get("M")}
        self.conversation.record_output(event)

    def _parameter_status(self, body):  # S
        self.conversation.parameter_changed(bytes(body))
        return PASS

    def _passthrough(self, body):  # N A v c
        return PASS

    def _unsupported(self, body):
        raise Desync("the target started a mode the relay does not relay (replication or function call)")



def _completes(kind: int):
    """A handler for an answer that completes one queued message (ParseComplete & co)."""
    def handler(stream: TargetStream, body):
        stream._expect_head(kind)
        entry = stream.queue.popleft()
        if kind != CLOSE:
            entry.item.settle(True)
        return PASS
    return handler


_HANDLERS = {
    ord("Z"): TargetStream._ready,
    ord("E"): TargetStream._error,
    ord("1"): _completes(PARSE),
    ord("2"): _completes(BIND),
    ord("3"): _completes(CLOSE),
    ord("t"): TargetStream._param_description,
    ord("T"): TargetStream._row_description,
    ord("n"): TargetStream._no_data,
    ord("D"): TargetStream._data_row,
    ord("C"): TargetStream._complete_command,
    ord("I"): TargetStream._empty_query,
    ord("s"): TargetStream._suspended,
    ord("G"): TargetStream._copy_in,
    ord("H"): TargetStream._copy_out,
    ord("S"): TargetStream._parameter_status,
    ord("N"): TargetStream._passthrough,
    ord("A"): TargetStream._passthrough,
    ord("c"): TargetStream._passthrough,
    ord("W"): TargetStream._unsupported,
    ord("V"): TargetStream._unsupported,
}
