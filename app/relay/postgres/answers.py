"""Whole plain answers: sent at once, recorded by the writer, not decoded by the relay (pure).

Most statements a runtime sends are one query whose whole answer arrives in one chunk:
RowDescription, a few DataRows, CommandComplete, ReadyForQuery. `TargetStream` sends
such a chunk on at once, as it is or with its rows masked (`masked_answer`), and hands
the bytes it sent to the recording. The recording writer, in a process
of its own, then decodes it with `answer_json` into exactly the event that
`TargetStream` would have built frame by frame. That took a third of the relay's time
per statement under pgbench.

`plain_answer` says whether a chunk is such an answer; anything else (an error, a
notice, a parameter change, more rows than the sample keeps, a chunk boundary in the
middle) takes the frame-by-frame path.

`_answers.c` does the two steps every statement pays for, the writer's scan
(`scan_answer`) and the row loop of `masked_answer`, in C. The Python here is what
the C must equal (tests/unit/test_fastlane.py), what says how a malformed answer is
malformed, and what runs when the extension is not compiled.
"""
from __future__ import annotations

import json
import struct
import time

from app.recording_store import compact_json

from . import masking
from .protocol import ProtocolError, column_names, command_tag, sample_row
from .state import QUERY

try:
    from ._answers import mask_rows as _mask_rows
    from ._answers import scan_answer as _scan
except ImportError:  # not compiled (`pip install -e .` builds it): the Python does it all
    _mask_rows = None

    def _scan(answer: bytes, sample_rows: int) -> None:
        return None

_I32 = struct.Struct("!i").unpack_from
_ROW_DESCRIPTION, _DATA_ROW, _COMMAND_COMPLETE, _READY = 0x54, 0x44, 0x43, 0x5A


def plain_answer(chunk: bytes, max_rows: int) -> int:
    """Where the closing ReadyForQuery starts, if `chunk` is exactly [RowDescription]
    DataRow{0..max_rows} CommandComplete ReadyForQuery, with rows only after a
    RowDescription; else -1."""
    z = len(chunk) - 6
    if z < 5 or chunk[z] != _READY or _I32(chunk, z + 1)[0] != 5:
        return -1
    pos = rows = 0
    described = False
    while z - pos >= 5:
        kind = chunk[pos]
        length = _I32(chunk, pos + 1)[0]
        end = pos + 1 + length
        if length < 4 or end > z:
            return -1
        if kind == _DATA_ROW:
            rows += 1
            if not described or rows > max_rows:
                return -1
        elif kind == _COMMAND_COMPLETE:
            return z if end == z else -1
        elif kind != _ROW_DESCRIPTION or pos:
            return -1
        else:
            described = True
        pos = end
    return -1


def masked_answer(masker, chunk: bytes, z: int, refuse_binary: bool) -> bytes | None:
    """A plain answer (the frames before `z`) as the client gets it under `masker`:
    the RowDescription retyped where masks turn values into text, every row masked, as
    the frame-by-frame path sends them. None when its rows must be refused instead
    (masked binary columns and AIRLOCK_RELAY_MASKED_BINARY=refuse)."""
    if chunk[0] != _ROW_DESCRIPTION:
        return chunk[:z]  # no rows to mask
    view = memoryview(chunk)
    end = 1 + _I32(chunk, 1)[0]
    plan, _, rewritten = masking.query_plan(masker, view[5:end])
    if plan.nulls and refuse_binary:
        return None
    if not plan.needs_work:
        return chunk[:z] if rewritten is None else rewritten + chunk[end:z]
    if _mask_rows is not None and not plan.nulls and not plan.checks:
        rows = _mask_rows(chunk, end, z, plan.cells, masker.mask_cell)
        if rows is not None:
            return (rewritten or chunk[:end]) + rows
    parts = [rewritten or chunk[:end]]  # the rows below say how they are malformed
    pos = end
    while pos < z:
        kind, end = chunk[pos], pos + 1 + _I32(chunk, pos + 1)[0]
        parts.append(masking.mask_row(masker, plan, view[pos + 5:end])[0] if kind == _DATA_ROW else chunk[pos:end])
        pos = end
    return b"".join(parts)


_NAMES: dict[bytes, list[str]] = {}  # RowDescription -> column names: answers repeat their columns


def cached_column_names(description: bytes) -> list[str]:
    names = _NAMES.get(description)
    if names is None:
        if len(_NAMES) >= 1024:
            _NAMES.clear()
        names = _NAMES[description] = column_names(description)
    return names  # shared: serialised at once, never changed


def answer_json(sql: str, rule: str | None, masks: list[str], ms: float, answer: bytes, sample_rows: int,
                masked: int = 0) -> str:
    """A simple query's output event, as TargetStream._finish records it (the statement,
    its allow rule, masks, the number of values masked and time, completed from its
    answer: the frames before
    ReadyForQuery), and already as the JSON the recording stores: exactly what
    compact_json writes for that event. The writer runs this for most statements, and
    spelling out the JSON, with the parts that repeat from answer to answer (columns,
    tag) cached, halves its cost. Plain arguments: they cross to the writer."""
    head = '{"sql":' + _string(sql)
    if rule:
        head += ',"rule":' + _string(rule)
    if masks:
        head += ',"masks":' + compact_json(masks)
    head += ',"ms":' + repr(ms)
    if masked:
        head += f',"masked":{int(masked)}'
    try:
        rows, sampled, description, complete, sample = _scan(answer, sample_rows) or scan_answer(answer, sample_rows)
        columns = _columns_json(description) if description is not None and sampled else ""
        tag, has_rows = _tag_json(complete) if complete is not None else ("", False)
    except (ProtocolError, struct.error, ValueError, IndexError):
        # The client got these bytes as the target sent them; say so rather than guess.
        return head + ',"sample_error":"the target\'s answer could not be decoded for the recording"}'
    if not has_rows and description is not None:
        tag += f',"rows":{rows}'
    if not columns:
        return head + tag + "}"
    truncated = ',"truncated":true}' if rows > sampled else "}"
    return head + tag + columns + sample + truncated


def scan_answer(answer: bytes, sample_rows: int) -> tuple[int, int, bytes | None, bytes | None, str]:
    """(rows, rows sampled, the RowDescription's body, the CommandComplete's body, the
    sample as JSON) of an answer's frames; raises on a malformed one. _answers.c does
    the same faster, and leaves malformed answers to this."""
    view = memoryview(answer)
    description: bytes | None = None
    complete: bytes | None = None
    sample: list = []
    rows = pos = 0
    while pos < len(answer):
        kind, length = answer[pos], _I32(answer, pos + 1)[0]
        end = pos + 1 + length
        if length < 4 or end > len(answer):
            raise ProtocolError("malformed frame in a recorded answer")
        if kind == _DATA_ROW:
            rows += 1
            if len(sample) < sample_rows:
                sample.append(sample_row(view[pos + 5:end]))
        elif kind == _ROW_DESCRIPTION:
            description = answer[pos + 5:end]
        elif kind == _COMMAND_COMPLETE:
            complete = answer[pos + 5:end]
        pos = end
    return rows, len(sample), description, complete, compact_json(sample)


_string = json.encoder.encode_basestring  # a str as compact_json writes it
_COLUMNS_JSON: dict[bytes, str] = {}  # RowDescription -> ',"columns":[...],"sample":'
_TAGS_JSON: dict[bytes, tuple[str, bool]] = {}  # CommandComplete -> (',"tag":...,"rows":n', has rows)


def _columns_json(description: bytes) -> str:
    part = _COLUMNS_JSON.get(description)
    if part is None:
        if len(_COLUMNS_JSON) >= 1024:
            _COLUMNS_JSON.clear()
        part = _COLUMNS_JSON[description] = ',"columns":' + compact_json(column_names(description)) + ',"sample":'
    return part


def _tag_json(complete: bytes) -> tuple[str, bool]:
    part = _TAGS_JSON.get(complete)
    if part is None:
        tag, rows = command_tag(complete)
        text = (',"tag":' + _string(tag) if tag else "") + (f',"rows":{rows}' if rows is not None else "")
        if len(_TAGS_JSON) >= 1024:
            _TAGS_JSON.clear()
        part = _TAGS_JSON[complete] = (text, rows is not None)
    return part


STATUS = {s[0]: s for s in (b"I", b"T", b"E")}  # ReadyForQuery's transaction status


class WholeAnswers:
    """The whole-answer path of `TargetStream` (stream.py), whose queue and state it reads:
    one simple query's whole answer in one chunk goes out at once, as it is or masked."""

    # -- the fast lane's interface (fastlane.py) ------------------------------------

    def at_rest(self) -> bool:
        """Nothing queued, skipped or part-way: the lane may answer its statement in flight."""
        return (not self.queue and not self._skip and self._partial is None and not self._held
                and self._result is None and self.handlers is self._handlers)

    def answered_by_lane(self, status: int) -> None:
        """The lane sent a whole answer, ending in ReadyForQuery with this status byte."""
        self.status = STATUS[status]

    def _whole_plain_answer(self, chunk: bytes) -> bool:
        """The fast path (app/relay/postgres/answers.py): one simple query's whole answer in one
        chunk goes out at once, as it is or masked, and the writer decodes it for the
        recording."""
        q = self.queue
        if len(q) != 1 or self._skip or self._partial is not None or self._held or self._result is not None:
            return False
        head = q[0]
        item = head.item
        if (head.kind != QUERY or item is None or len(item.statements) != 1
                or self.handlers is not self._handlers):
            return False
        z = plain_answer(chunk, self.sample_rows)
        status = STATUS.get(chunk[-1]) if z >= 0 else None
        if status is None:
            return False
        masked = 0
        if item.masker is None:
            answer, out = chunk[:z], chunk
        else:  # masked here, before anything is sent or changed: an error leaves it to the slow path
            before = item.masker.masked
            try:
                answer = masked_answer(item.masker, chunk, z, self.refuse_binary)
            except (ProtocolError, struct.error):
                return False
            if answer is None:
                return False
            masked = item.masker.masked - before  # values this answer's masking replaced
            out = answer + chunk[z:]
        self.client.write(out)
        q.popleft()
        now = time.monotonic()
        text, rule = item.statements.pop()
        self.conversation.record_answer(text, rule, item.masks, int((now - self._since) * 1e6) / 1000,
                                        answer, self.sample_rows, masked)  # as sent: masked
        self._since = now
        self.status = status
        if status == b"I":
            self.conversation.target_idle(head.batch)
        if self.conversation.barriers.watching:
            self.conversation.target_ready(head.batch, status)
        return True
