"""The target -> client direction: scan frames, keep track of what each one answers,
mask rows, and record results.

Every message the relay forwards to the target that the target answers puts a
`Pending` on a queue, in order. PostgreSQL answers in order too, so the head of the
queue always says what the next answer belongs to: which portal's rows are arriving
(and so which mask plan applies), which RowDescription the relay asked for itself
(and swallows), which error stands in for a refused statement. An answer the queue
does not expect means the relay lost track; it then closes the connection rather
than guess how to mask (fail closed).

Fast path: when nothing applies to the rows of the current result (no mask, row
sample full), DataRows are forwarded without being parsed, even across chunk
boundaries, and whole chunks go out as received.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque

from app.masking import Masker

from . import pgmask
from .pgwire import ProtocolError, column_names, parse_data_row, parse_fields, parse_row_description, unpack_i32

PARSE, BIND, DESCRIBE, EXECUTE, CLOSE, SYNC, QUERY, REFUSE, COPY_END = range(9)
_PASS = None  # a handler's answer: forward the frame unchanged


class Desync(Exception):
    """An answer the relay cannot place: stop rather than risk unmasked rows."""


class _Named:
    """A statement or portal the client created through the relay; the target confirms it."""

    __slots__ = ("name", "batch", "confirmed", "settled")

    def __init__(self, name: str):
        self.name = name
        self.batch = 0  # the client's batch (Syncs sent) when it was created
        self.confirmed = False
        self.settled: asyncio.Future | None = None  # made by whoever waits for the answer


class Prepared(_Named):
    __slots__ = ("text", "ops", "masks", "masker", "fields", "described", "checked_at", "rule", "param_types")

    def __init__(self, name, text, ops, masks, masker: Masker | None, checked_at: float, rule: str | None):
        super().__init__(name)
        self.text, self.ops, self.masks, self.masker, self.rule = text, ops, masks, masker, rule
        self.param_types: tuple[int, ...] = ()
        self.fields = None  # RowDescription fields, once known ([] for no rows)
        self.described: asyncio.Future | None = None  # set when the relay asked for them
        self.checked_at = checked_at


class Portal(_Named):
    __slots__ = ("prepared", "formats", "plan", "params")

    def __init__(self, name, prepared: Prepared, formats, plan, params):
        super().__init__(name)
        self.prepared, self.formats, self.plan, self.params = prepared, formats, plan, params


class Change:
    """Puts a new statement or portal in the client's table at once, and takes it back
    if the target refuses it: PostgreSQL then keeps the old named one (the name was
    taken) or has dropped the unnamed one."""

    __slots__ = ("table", "name", "new", "prev")

    def __init__(self, table: dict, name: str, new: _Named):
        self.table, self.name, self.new = table, name, new
        self.prev = table.get(name)
        table[name] = new

    def settle(self, ok: bool) -> None:
        new = self.new
        if not ok and self.table.get(self.name) is new:
            if self.prev is None or self.name == "":
                del self.table[self.name]
            else:
                self.table[self.name] = self.prev
        new.confirmed = True
        if new.settled is not None and not new.settled.done():
            new.settled.set_result(ok)


class Query:
    """A simple-protocol query in flight: statements (text, allow rule) in result order."""

    __slots__ = ("masker", "statements", "masks")

    def __init__(self, masker: Masker | None, statements: list[tuple[str, str | None]], masks: list[str]):
        self.masker, self.statements, self.masks = masker, deque(statements), masks


class Pending:
    __slots__ = ("kind", "item", "swallow", "refusal", "batch")

    def __init__(self, kind: int, item=None, swallow: bool = False, refusal: bytes | None = None, batch: int = 0):
        self.kind, self.item, self.swallow, self.refusal, self.batch = kind, item, swallow, refusal, batch


class _Result:
    """One statement's answer while it streams back (for masking and the recording)."""

    __slots__ = ("masker", "plan", "columns", "sample", "rows", "retyped")

    def __init__(self, masker, plan, columns):
        self.masker, self.plan, self.columns = masker, plan, columns
        self.sample: list = []
        self.rows = 0


class TargetStream:
    def __init__(self, session, client, *, sample_rows: int, max_frame: int, refuse_binary: bool):
        self.session = session
        self.client = client
        self.sample_rows = sample_rows
        self.max_frame = max_frame
        self.refuse_binary = refuse_binary
        self.queue: deque[Pending] = deque()
        self.status = b"I"
        self.copy_in_extended = False  # the target ignores Syncs until the copy ends
        self._result: _Result | None = None
        self._fast_rows = False
        self._skip = 0  # bytes of a streamed frame still to forward
        self._partial: bytearray | None = None
        self._held: list[bytes] = []  # relay frames waiting for a frame boundary
        self._since = time.monotonic()
        self._drop_until_ready = False

    # -- called by the session ----------------------------------------------------

    def expect(self, kind: int, item=None, swallow: bool = False, refusal: bytes | None = None,
               batch: int = 0) -> None:
        if kind in (EXECUTE, QUERY) and not self.queue:
            self._since = time.monotonic()
        self.queue.append(Pending(kind, item, swallow, refusal, batch))

    def send(self, frame: bytes) -> None:
        """A frame of the relay's own, placed between the target's frames."""
        if self._skip or self._partial is not None:
            self._held.append(frame)
        else:
            self.client.write(frame)

    @property
    def idle(self) -> bool:
        return not self.queue

    # -- scanning -----------------------------------------------------------------

    def data(self, chunk: bytes) -> None:
        try:
            self._scan(chunk)
        except (Desync, ProtocolError) as exc:
            self.session.lost_track(str(exc))

    def _scan(self, chunk: bytes) -> None:
        n = len(chunk)
        view = memoryview(chunk)
        out: list = []
        pos = 0
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
            if self._skip:
                self.client.write(chunk)
                return
            out.append(view[:pos])
        elif self._partial is not None:
            pos = self._complete(view, out)
            if self._partial is not None or self._skip:
                self._write(out)
                return
        if self._held:
            out.extend(self._held)
            self._held.clear()
        start = pos
        while pos < n:
            if n - pos < 5:
                self._cut(view, start, pos, out)
                self._partial = bytearray(view[pos:])
                start = n
                break
            kind = chunk[pos]
            length = unpack_i32(chunk, pos + 1)[0]
            if length < 4:
                raise ProtocolError("the target sent a malformed frame")
            end = pos + 1 + length
            if (kind == 0x44 and self._fast_rows) or kind == 0x64:  # D on the fast path, d (COPY OUT)
                pos = end
                if end > n:
                    self._skip = end - n  # forwarded as it arrives, never buffered
                    break
                continue
            if end > n:
                self._cut(view, start, pos, out)
                if length > self.max_frame:
                    raise Desync(f"a {length}-byte message from the target exceeds the relay's limit")
                self._partial = bytearray(view[pos:])
                start = n
                break
            handler = _HANDLERS.get(kind) if not self._drop_until_ready or kind == 0x5A else _swallow
            if handler is None:
                raise Desync(f"unexpected message {chr(kind)!r} from the target")
            replacement = handler(self, view[pos + 5:end], view[pos:end])
            if replacement is not _PASS:
                self._cut(view, start, pos, out)
                if replacement:
                    out.append(replacement)
                start = end
            pos = end
        if start < n:
            out.append(view[start:] if start else chunk)
        self._write(out)

    @staticmethod
    def _cut(view: memoryview, start: int, pos: int, out: list) -> None:
        if pos > start:
            out.append(view[start:pos])

    def _write(self, out: list) -> None:
        if len(out) == 1:
            self.client.write(out[0])
        elif out:
            self.client.write(b"".join(out))

    def _complete(self, view: memoryview, out: list) -> int:
        """Finish the frame buffered from earlier chunks; returns bytes of `view` used."""
        buf = self._partial
        n = len(view)
        pos = 0
        if len(buf) < 5:
            pos = min(5 - len(buf), n)
            buf += view[:pos]
            if len(buf) < 5:
                return pos
        kind = buf[0]
        length = unpack_i32(buf, 1)[0]
        if length < 4:
            raise ProtocolError("the target sent a malformed frame")
        total = 1 + length
        if (kind == 0x44 and self._fast_rows) or kind == 0x64:
            self._partial = None
            out.append(bytes(buf))
            rest = total - len(buf)
            take = min(rest, n - pos)
            out.append(view[pos:pos + take])
            self._skip = rest - take
            return pos + take
        if length > self.max_frame:
            raise Desync(f"a {length}-byte message from the target exceeds the relay's limit")
        take = min(total - len(buf), n - pos)
        buf += view[pos:pos + take]
        pos += take
        if len(buf) < total:
            return pos
        self._partial = None
        raw = memoryview(bytes(buf))
        handler = _HANDLERS.get(kind) if not self._drop_until_ready or kind == 0x5A else _swallow
        if handler is None:
            raise Desync(f"unexpected message {chr(kind)!r} from the target")
        replacement = handler(self, raw[5:], raw)
        out.append(raw if replacement is _PASS else replacement)
        return pos

    # -- one message ----------------------------------------------------------------

    def _head(self) -> Pending | None:
        q = self.queue
        while q and q[0].kind == COPY_END:
            q.popleft()
        return q[0] if q else None

    def _ready(self, body, raw):  # Z
        q = self.queue
        while q:
            entry = q.popleft()
            if entry.kind in (SYNC, QUERY):
                break
            self._abandon(entry)
        else:
            raise Desync("ReadyForQuery that answers nothing")
        self.status = bytes(body[:1])
        closed = entry.batch
        if entry.kind == QUERY and entry.item is not None:
            for text, _ in entry.item.statements:  # after an error, the rest never ran
                self.session.record_output({"sql": text, "not_run": True})
        self._result = None
        self._fast_rows = False
        self._drop_until_ready = False
        self.copy_in_extended = False
        if q and q[0].kind in (EXECUTE, QUERY):
            self._since = time.monotonic()
        self.session.target_ready(self.status, closed)
        return _PASS

    def _error(self, body, raw):  # E
        head = self._head()
        fields = parse_fields(body)
        if head is None:
            return _PASS  # e.g. a FATAL on shutdown: nothing was waiting for it
        if head.kind == REFUSE:
            self.queue.popleft()
            self._skip_to_sync()
            return head.refusal
        self._finish(head, error=fields)
        if head.kind != QUERY:  # a simple query's error ends that statement; Z follows
            self._skip_to_sync()
        return _PASS

    def _skip_to_sync(self) -> None:
        """After an error in the extended protocol the target skips to the next Sync."""
        q = self.queue
        while q and q[0].kind not in (SYNC, QUERY):
            self._abandon(q.popleft())

    @staticmethod
    def _abandon(entry: Pending) -> None:
        """The target skipped this message after an error."""
        if entry.kind in (PARSE, BIND):
            entry.item.settle(False)
        elif entry.kind == DESCRIBE and entry.swallow:
            fut = entry.item.described
            if fut is not None and not fut.done():
                fut.set_result(False)

    def _expect_head(self, *kinds: int) -> Pending:
        head = self._head()
        if head is None or head.kind not in kinds:
            raise Desync("an answer the relay did not expect")
        return head

    def _param_description(self, body, raw):  # t
        head = self._expect_head(DESCRIBE)
        return b"" if head.swallow else _PASS

    def _row_description(self, body, raw):  # T
        head = self._expect_head(DESCRIBE, QUERY)
        if head.kind == QUERY:
            masker = head.item.masker if head.item is not None else None
            if masker is None:  # nothing to mask: column names only if the sample needs them
                self._start(None, None, bytes(body))
                return _PASS
            fields = parse_row_description(body)
            plan = pgmask.plan_rows(masker, fields)
            self._start(masker, plan, [f.name for f in fields])
            if plan is not None and plan.nulls and self.refuse_binary:
                self._drop_until_ready = True  # a binary cursor FETCH; refused below
                return self.session.binary_refusal(plan)
            return pgmask.rewrite_description(fields, plan) if plan.retype else _PASS
        return self._described(head, parse_row_description(body), raw)

    def _no_data(self, body, raw):  # n
        head = self._expect_head(DESCRIBE)
        return self._described(head, [], raw)

    def _describe_fields(self, head, body, raw):
        return self._described(head, parse_row_description(body), raw)

    def _described(self, head: Pending, fields, raw):
        self.queue.popleft()
        item = head.item
        if item is None:
            return _PASS
        if isinstance(item, Masker):
            plan = pgmask.plan_rows(item, fields) if fields else None
        elif isinstance(item, Portal):
            masker = item.prepared.masker
            plan = pgmask.plan_rows(masker, fields) if masker is not None and fields else None
        else:
            item.fields = fields
            if item.described is not None and not item.described.done():
                item.described.set_result(True)
            masker = item.masker
            plan = pgmask.plan_rows(masker, fields) if masker is not None and fields else None
        if head.swallow:
            return b""
        if plan is not None and plan.retype:
            return pgmask.rewrite_description(fields, plan)
        return _PASS

    def _start(self, masker, plan, columns) -> None:
        """A result begins. `columns`: names, or a raw RowDescription decoded only if needed."""
        plain = plan is None or not plan.needs_work
        self._result = _Result(masker if not plain else None, plan if not plain else None, columns)
        self._fast_rows = plain and self.sample_rows <= 0

    def _data_row(self, body, raw):  # D
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
            frame, values = pgmask.mask_row(r.masker, r.plan, body)
            self._sample(r, values)
            return frame
        self._sample(r, None, body)
        return _PASS

    def _sample(self, r: _Result, values, body=None) -> None:
        if len(r.sample) >= self.sample_rows:
            if r.plan is None:
                self._fast_rows = True  # sample full: stop parsing rows
            return
        if values is None:
            values = parse_data_row(body)
        r.sample.append([None if v is None else str(v[:2000], "utf-8", "replace")[:500] for v in values])

    def _complete_command(self, body, raw):  # C
        head = self._expect_head(EXECUTE, QUERY)
        tag = bytes(body).rstrip(b"\0")
        self._finish(head, tag=tag)
        if head.kind == EXECUTE:
            self.queue.popleft()
        return _PASS

    def _empty_query(self, body, raw):  # I
        head = self._expect_head(EXECUTE, QUERY)
        self._finish(head, tag=b"")
        if head.kind == EXECUTE:
            self.queue.popleft()
        return _PASS

    def _suspended(self, body, raw):  # s
        head = self._expect_head(EXECUTE)
        self._finish(head, tag=b"", suspended=True)
        self.queue.popleft()
        return _PASS

    def _copy_in(self, body, raw):  # G
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
        return _PASS

    def _copy_out(self, body, raw):  # H
        head = self._expect_head(EXECUTE, QUERY)
        masker = head.item.prepared.masker if head.kind == EXECUTE else head.item.masker
        if masker is not None:
            raise Desync("COPY TO STDOUT of a masked statement")  # refused earlier; never stream it
        self._start(None, None, None)
        return _PASS

    def _finish(self, head: Pending, tag: bytes | None = None, error: dict | None = None,
                suspended: bool = False) -> None:
        """One statement is done: record it with its outcome (one event per statement)."""
        r = self._result
        self._result = None
        self._fast_rows = False
        now = time.monotonic()
        event = _statement_of(head)
        event["ms"] = round((now - self._since) * 1000, 3)
        self._since = now
        if tag:
            event["tag"] = text = tag.decode("utf-8", "replace")
            last = text.rpartition(" ")[2]
            if last.isdigit():
                event["rows"] = int(last)
        if r is not None:
            if "rows" not in event:
                event["rows"] = r.rows
            if r.sample:
                columns = r.columns
                event["columns"] = column_names(columns) if isinstance(columns, bytes) else columns
                event["sample"] = r.sample
                if r.rows > len(r.sample):
                    event["truncated"] = True
        if suspended:
            event["suspended"] = True
        if error is not None:
            event["error"] = {"code": error.get("C"), "message": error.get("M")}
        self.session.record_output(event)

    def _parameter_status(self, body, raw):  # S
        self.session.parameter_changed(bytes(body))
        return _PASS

    def _passthrough(self, body, raw):  # N A v c
        return _PASS

    def _unsupported(self, body, raw):
        raise Desync("the target started a mode the relay does not relay (replication or function call)")


def _swallow(stream, body, raw):
    return b""


def _statement_of(head: Pending) -> dict:
    """What the recording says about the statement an answer belongs to."""
    item = head.item
    if head.kind == QUERY:
        if item is None or not item.statements:
            return {}
        text, rule = item.statements.popleft()
        event = {"sql": text}
        if rule:
            event["rule"] = rule
        if item.masks:
            event["masks"] = item.masks
        return event
    if head.kind in (PARSE, BIND):
        item = item.new
    if isinstance(item, Portal):
        event = {"sql": item.prepared.text}
        if item.params:
            event["params"] = item.params
        prep = item.prepared
    elif isinstance(item, Prepared):
        event, prep = {"sql": item.text}, item
    else:
        return {}
    if prep.name:
        event["statement"] = prep.name
    if prep.rule:
        event["rule"] = prep.rule
    if prep.masks:
        event["masks"] = sorted({m.rule for m in prep.masks})
    return event


def _completes(kind: int):
    """A handler for an answer that completes one queued message (ParseComplete & co)."""
    def handler(stream: TargetStream, body, raw):
        stream._expect_head(kind)
        entry = stream.queue.popleft()
        if kind != CLOSE:
            entry.item.settle(True)
        return _PASS
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
