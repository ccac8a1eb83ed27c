"""PostgreSQL wire protocol v3: framing, the messages the relay reads or writes, and `Wire`.

Frames are `type byte, int32 length (itself included), payload`; the startup-phase
messages have no type byte. Parsers take a memoryview of a payload and raise
`ProtocolError` on anything malformed, so a hostile frame can only end its own
connection. Nothing here copies a payload it does not have to. The connection
object itself is `wire.Wire`.
"""
from __future__ import annotations

import struct

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP = 10_000  # what PostgreSQL itself accepts

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HDR = struct.Struct("!ci")
unpack_i32 = _I32.unpack_from
unpack_i16 = _I16.unpack_from


class ProtocolError(Exception):
    """A frame that breaks the protocol: the connection that sent it is closed."""

    def __init__(self, message: str, sqlstate: str = "08P01"):
        super().__init__(message)
        self.sqlstate = sqlstate


# -- building messages --------------------------------------------------------------


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + _I32.pack(len(payload) + 4) + payload


def _fields(severity: str, sqlstate: str, message: str, detail: str | None, hint: str | None) -> bytes:
    parts = [b"S", severity.encode(), b"\0V", severity.encode(), b"\0C", sqlstate.encode(), b"\0M",
             message.encode("utf-8", "replace"), b"\0"]
    if detail:
        parts += [b"D", detail.encode("utf-8", "replace"), b"\0"]
    if hint:
        parts += [b"H", hint.encode("utf-8", "replace"), b"\0"]
    parts.append(b"\0")
    return b"".join(parts)


def error_response(sqlstate: str, message: str, *, severity: str = "ERROR", detail: str | None = None,
                   hint: str | None = None) -> bytes:
    return frame(b"E", _fields(severity, sqlstate, message, detail, hint))


def notice_response(message: str, *, detail: str | None = None, hint: str | None = None,
                    severity: str = "NOTICE", sqlstate: str = "00000") -> bytes:
    return frame(b"N", _fields(severity, sqlstate, message, detail, hint))


def auth_request(code: int, data: bytes = b"") -> bytes:
    return frame(b"R", _I32.pack(code) + data)


def backend_key_data(pid: int, secret: int) -> bytes:
    return frame(b"K", struct.pack("!ii", pid, secret))


def ready_for_query(status: bytes) -> bytes:
    return frame(b"Z", status)


def negotiate_protocol_version(minor: int, unsupported: list[str]) -> bytes:
    body = _I32.pack(minor) + _I32.pack(len(unsupported)) + b"".join(o.encode() + b"\0" for o in unsupported)
    return frame(b"v", body)


def startup_message(params: dict[str, str]) -> bytes:
    body = _I32.pack(PROTOCOL_3) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return _I32.pack(len(body) + 4) + body


def parse_message(name: str, query: str) -> bytes:
    return frame(b"P", name.encode() + b"\0" + query.encode() + b"\0" + _I16.pack(0))


def describe_message(kind: bytes, name: str) -> bytes:
    return frame(b"D", kind + name.encode() + b"\0")


def query_message(sql: str) -> bytes:
    return frame(b"Q", sql.encode() + b"\0")


def data_row(values: list) -> bytes:
    parts = [_I16.pack(len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_I32.pack(len(v)))
            parts.append(v)
    return frame(b"D", b"".join(parts))


# -- reading messages ---------------------------------------------------------------


def _nul(buf: memoryview, pos: int) -> int:
    """Offset of the next NUL from `pos`, or -1. Names are short: look near first."""
    end = bytes(buf[pos:pos + 256]).find(b"\0")
    if end < 0 and len(buf) - pos > 256:
        end = bytes(buf[pos:]).find(b"\0")
    return end


def cstring(buf: memoryview, pos: int) -> tuple[str, int]:
    """The NUL-terminated UTF-8 string at `pos`, and the position after its NUL."""
    end = _nul(buf, pos)
    if end < 0:
        raise ProtocolError("unterminated string in message")
    try:
        return str(buf[pos:pos + end], "utf-8"), pos + end + 1
    except UnicodeDecodeError:
        raise ProtocolError("invalid UTF-8 in message") from None


def _i16(buf: memoryview, pos: int) -> int:
    if pos + 2 > len(buf):
        raise ProtocolError("message too short")
    return unpack_i16(buf, pos)[0]


def _i32(buf: memoryview, pos: int) -> int:
    if pos + 4 > len(buf):
        raise ProtocolError("message too short")
    return unpack_i32(buf, pos)[0]


def parse_startup_params(body: memoryview) -> dict[str, str]:
    """The key/value pairs after the protocol version of a StartupMessage."""
    params: dict[str, str] = {}
    pos = 4
    while True:
        if pos >= len(body):
            raise ProtocolError("startup packet has no terminator")
        if body[pos] == 0:
            return params
        key, pos = cstring(body, pos)
        value, pos = cstring(body, pos)
        params[key] = value


def parse_parse(body: memoryview) -> tuple[str, bytes, tuple[int, ...]]:
    """Parse: statement name, raw query bytes (encoded as the client sends), parameter type OIDs."""
    name, pos = cstring(body, 0)
    end = _nul(body, pos)
    if end < 0:
        raise ProtocolError("unterminated query in Parse")
    query = bytes(body[pos:pos + end])
    pos += end + 1
    nparams = _i16(body, pos)
    if nparams < 0 or pos + 2 + 4 * nparams != len(body):
        raise ProtocolError("malformed Parse")
    return name, query, struct.unpack_from(f"!{nparams}I", body, pos + 2)


class Bind:
    """What the relay needs from a Bind: names, parameter values and result formats."""

    __slots__ = ("portal", "statement", "param_formats", "params", "result_formats")

    def __init__(self, body: memoryview):
        self.portal, pos = cstring(body, 0)
        self.statement, pos = cstring(body, pos)
        n = _i16(body, pos)
        pos += 2
        self.param_formats = [_i16(body, pos + 2 * i) for i in range(max(n, 0))]
        pos += 2 * max(n, 0)
        self.params, pos = _values(body, pos + 2, _i16(body, pos), "Bind parameter")
        n = _i16(body, pos)
        pos += 2
        if n < 0 or pos + 2 * n != len(body):
            raise ProtocolError("malformed Bind")
        self.result_formats = tuple(_i16(body, pos + 2 * i) for i in range(n))

    def param_format(self, i: int) -> int:
        f = self.param_formats
        return f[i] if len(f) > 1 else (f[0] if f else 0)


def parse_target(body: memoryview) -> tuple[bytes, str]:
    """Describe/Close: ('S' or 'P', name)."""
    if len(body) < 2 or body[0] not in b"SP":
        raise ProtocolError("malformed Describe/Close")
    name, pos = cstring(body, 1)
    if pos != len(body):
        raise ProtocolError("malformed Describe/Close")
    return bytes(body[0:1]), name


def parse_execute(body: memoryview) -> str:
    name, pos = cstring(body, 0)
    if pos + 4 != len(body):
        raise ProtocolError("malformed Execute")
    return name


class Field:
    __slots__ = ("name", "table_oid", "attnum", "type_oid", "typlen", "typmod", "format")

    def __init__(self, name, table_oid, attnum, type_oid, typlen, typmod, fmt):
        self.name, self.table_oid, self.attnum = name, table_oid, attnum
        self.type_oid, self.typlen, self.typmod, self.format = type_oid, typlen, typmod, fmt


def parse_row_description(body: memoryview) -> list[Field]:
    n = _i16(body, 0)
    pos = 2
    out = []
    for _ in range(max(n, 0)):
        name, pos = cstring(body, pos)
        if pos + 18 > len(body):
            raise ProtocolError("malformed RowDescription")
        table_oid, attnum, type_oid, typlen, typmod, fmt = struct.unpack_from("!IhIhih", body, pos)
        pos += 18
        out.append(Field(name, table_oid, attnum, type_oid, typlen, typmod, fmt))
    return out


def column_names(body: bytes) -> list[str]:
    """Just the names of a RowDescription (what a recording needs)."""
    names, pos = [], 2
    for _ in range(max(unpack_i16(body, 0)[0], 0)):
        end = body.index(b"\0", pos)
        names.append(body[pos:end].decode("utf-8", "replace"))
        pos = end + 19
    return names


def parse_data_row(body: memoryview) -> list[memoryview | None]:
    return _values(body, 2, _i16(body, 0), "DataRow")[0]


def _values(body: memoryview, pos: int, count: int, what: str) -> tuple[list[memoryview | None], int]:
    """`count` length-prefixed values from `pos` (length -1 is NULL), as views, and the
    position after them: the layout of Bind's parameters and of a DataRow."""
    out: list[memoryview | None] = []
    end = len(body)
    for _ in range(max(count, 0)):
        size = _i32(body, pos)
        pos += 4
        if size == -1:
            out.append(None)
            continue
        if size < 0 or pos + size > end:
            raise ProtocolError(f"malformed {what}")
        out.append(body[pos:pos + size])
        pos += size
    return out, pos


SAMPLE_CHARS = 500  # a recorded cell keeps this many characters
_SAMPLE_BYTES = 4 * SAMPLE_CHARS  # enough bytes for them in UTF-8


def sample_cells(values: list) -> list[str | None]:
    """Cells (bytes-like or None) as a recording's row sample keeps them."""
    return [None if v is None else str(v[:_SAMPLE_BYTES], "utf-8", "replace")[:SAMPLE_CHARS] for v in values]


def sample_row(body: memoryview) -> list[str | None]:
    """`sample_cells(parse_data_row(body))` in one pass (a row recorded as it streams by).
    Runs for most rows of small results: no helper calls, no list of slices."""
    end = len(body)
    if end < 2:
        raise ProtocolError("message too short")
    pos = 2
    out: list[str | None] = []
    for _ in range(unpack_i16(body, 0)[0]):  # a negative count: no cells, as parse_data_row
        if pos + 4 > end:
            raise ProtocolError("message too short")
        size = unpack_i32(body, pos)[0]
        pos += 4
        if size == -1:
            out.append(None)
            continue
        if size < 0 or pos + size > end:
            raise ProtocolError("malformed DataRow")
        cut = pos + size if size <= _SAMPLE_BYTES else pos + _SAMPLE_BYTES
        out.append(str(body[pos:cut], "utf-8", "replace")[:SAMPLE_CHARS])
        pos += size
    return out


_TAGS: dict[bytes, tuple[str, int | None]] = {}  # CommandComplete body -> (tag, rows): tags repeat


def command_tag(body: bytes) -> tuple[str, int | None]:
    """A CommandComplete's tag ("" if none) and the row count it ends with, if any."""
    cached = _TAGS.get(body)
    if cached is None:
        tag = body.rstrip(b"\0").decode("utf-8", "replace")
        last = tag.rpartition(" ")[2]
        rows = int(last) if tag and last.isdigit() else None
        if len(_TAGS) >= 1024:
            _TAGS.clear()
        cached = _TAGS[body] = (tag, rows)
    return cached


def parse_fields(body: memoryview) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields by code letter."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        end = _nul(body, pos + 1)
        if end < 0:
            break
        out[code] = bytes(body[pos + 1:pos + 1 + end]).decode("utf-8", "replace")
        pos += end + 2
    return out
