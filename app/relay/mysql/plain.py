"""An unmasked answer, passed to the client exactly as the target sent it.

When nothing in a command's answer is masked, the relay would only renumber packets that
already carry the numbers the client expects (the command went to the target as packet
0, the client's own number). So the bytes go on unchanged, a chunk at a time; the relay
only walks the packet headers to know where the answer ends, and checks what it must:
no LOCAL INFILE request, no payload over the limit, no byte after the answer.

What the recording needs (the OK/ERR packets, each result set's header and column
definitions, its first `sample_rows` rows, its row count) is kept aside and turned into
the output event by the recording writer (`render_output`, in its own process): the
event is the one answers.relay and output_event would have built.
"""
from __future__ import annotations

import asyncio
import struct

from . import answer as answers
from . import rows, wire

READ_SIZE = 1 << 18
# Where the answer is: a command's first packet, column definitions, their EOF, rows.
_FIRST, _COLUMNS, _COLUMNS_EOF, _ROWS = range(4)


class PlainAnswer:
    """The walk over one answer. `kept` is what the recording reads: ("ok"|"err", payload),
    ("set", header, [definitions], [sample rows], row count, end payload)."""

    __slots__ = ("state", "columns", "kept", "status", "error", "sample_rows", "limit", "done", "_set")

    def __init__(self, sample_rows: int, limit: int):
        self.state, self.columns = _FIRST, 0
        self.kept: list[tuple] = []
        self.status = 0
        self.error: tuple[int, str, str] | None = None
        self.sample_rows, self.limit = sample_rows, limit
        self.done = False
        self._set: list | None = None

    def payload(self, p: bytes) -> None:
        """One whole payload of the answer, in order."""
        state = self.state
        if state == _ROWS:
            if p[:1] == b"\xfe" and len(p) < 9:
                self.status = wire.eof_status(p)
                self._set[5] = p
                self.kept.append(tuple(self._set))
                self._set = None
                self._next(bool(self.status & wire.MORE_RESULTS))
            elif p[:1] == b"\xff":  # the set broke off: only the error is recorded, as answers.relay does
                self._set = None
                self._failed(p)
            else:
                self._set[4] += 1
                if len(self._set[3]) < self.sample_rows:
                    self._set[3].append(p)
            return
        if state == _COLUMNS:
            self._set[2].append(p)
            self.columns -= 1
            if not self.columns:
                self.state = _COLUMNS_EOF
            return
        if state == _COLUMNS_EOF:
            if not wire.is_eof(p):
                raise wire.ProtocolError("no EOF after the column definitions")
            self.state = _ROWS
            return
        head = p[:1]
        if head == b"\xff":
            self._failed(p)
        elif head == b"\x00":
            self.kept.append(("ok", p))
            self.status = wire.ok_status(p)[2]
            self._next(bool(self.status & wire.MORE_RESULTS))
        elif head == b"\xfb":  # LOCAL INFILE: never negotiated, so never honoured
            raise wire.ProtocolError("the target asked for a local file")
        else:
            count, _ = wire.lenenc_int(p, 0)
            if not count:
                raise wire.ProtocolError("a result set without columns")
            self._set = ["set", p, [], [], 0, b""]
            self.columns, self.state = count, _COLUMNS

    def _failed(self, p: bytes) -> None:
        self.kept.append(("err", p))
        self.error = wire.parse_error(p)
        self.done = True

    def _next(self, more: bool) -> None:
        self.state = _FIRST
        self.done = not more


class Packets:
    """Cuts the target's bytes into the answer's packets (walk.payload gets each whole
    payload) and says how much of them may go on: whole packets only."""

    __slots__ = ("walk", "buf", "part", "size")

    def __init__(self, walk: PlainAnswer):
        self.walk = walk
        self.buf = b""
        self.part: list[bytes] | None = None  # a payload of 16 MiB or more, in its packets
        self.size = 0

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of `chunk` (after what was held back) that end whole packets."""
        walk, limit = self.walk, self.walk.limit
        buf = self.buf + chunk if self.buf else chunk
        pos, end, n = 0, 0, len(buf)
        while n - pos >= 4 and not walk.done:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            if pos + 4 + length > n:
                if self.size + length > limit:
                    raise wire.ProtocolError(f"a packet of more than {limit} bytes")
                break
            body = buf[pos + 4:pos + 4 + length]
            pos = end = pos + 4 + length
            if length == wire.MAX_CHUNK or self.part is not None:
                part = self.part = self.part or []
                part.append(body)
                self.size += length
                if self.size > limit:
                    raise wire.ProtocolError(f"a packet of more than {limit} bytes")
                if length == wire.MAX_CHUNK:
                    continue
                body, self.part, self.size = b"".join(part), None, 0
            elif length > limit:
                raise wire.ProtocolError(f"a packet of more than {limit} bytes")
            try:
                walk.payload(body)
            except (IndexError, struct.error) as exc:  # a packet shorter than its contents
                raise wire.ProtocolError(f"a truncated packet ({type(exc).__name__})") from None
        if walk.done and end != n:
            raise wire.ProtocolError("the target sent more than its answer")
        self.buf = buf[end:] if end != n else b""
        return buf[:end] if end != n else buf


async def relay(target: asyncio.StreamReader, client: asyncio.StreamWriter, walk: PlainAnswer) -> None:
    """Read the target's answer to the command in flight and write it on unchanged, whole
    packets only, as they arrive."""
    packets = Packets(walk)
    while not walk.done:
        chunk = await target.read(READ_SIZE)
        if not chunk:
            raise ConnectionResetError("the target closed the connection")
        out = packets.feed(chunk)
        if out:
            client.write(out)
    await client.drain()


_PLANS: dict[tuple[bytes, ...], tuple[list, rows.Plan]] = {}  # in the writer: result sets repeat


def _columns(definitions: tuple[bytes, ...]) -> tuple[list, rows.Plan]:
    found = _PLANS.get(definitions)
    if found is None:
        columns = [rows.parse_column(d) for d in definitions]
        if len(_PLANS) >= 256:
            _PLANS.clear()
        found = _PLANS[definitions] = (columns, rows.plan(None, columns))
    return found


def render_output(sql: str, ms: float, rule: str | None, masks: list[str], params, kept: list[tuple],
                  binary: bool, sample_rows: int) -> dict:
    """The output event of a plain answer (run by the recording writer)."""
    answer = answers.Answer(ms=ms)
    for item in kept:
        if item[0] == "ok":
            affected, last_id, _ = wire.ok_status(item[1])
            result = {"tag": f"OK {affected}", "affected_rows": affected}
            if last_id:
                result["last_insert_id"] = last_id
            answer.results.append(result)
        elif item[0] == "err":
            code, _, message = wire.parse_error(item[1])
            answer.results.append({"error": {"code": code, "message": message}})
        else:
            _, _, definitions, sample, total, _ = item
            columns, plan = _columns(tuple(definitions))
            listed = []
            for payload in sample:
                values = rows.binary_values(plan, payload) if binary else rows.text_values(payload, len(columns))
                listed.append([answers.shown(v, c) for v, c in zip(values, columns)])
            result = {"columns": [c.name for c in columns], "sample": listed, "rows": total}
            if total > len(listed):
                result["truncated"] = True
            answer.results.append(result)
    return answers.output_event(sql, answer, rule, masks, params)
