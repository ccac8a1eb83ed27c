"""COM_STMT_EXECUTE's parameters: what an approver is shown, and what the approval binds
(pure). The binding covers the parameter bytes exactly as sent (types, NULL bitmap,
values, long data), so a parameter that differs by one byte is another operation."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from . import rows
from .wire import ProtocolError, lenenc_str


@dataclass
class Prepared:
    """A statement the target prepared for this session."""

    sql: str
    statements: list
    params: int
    columns: int
    types: bytes = b""  # the last types sent (a later execute may omit them)
    long_data: dict[int, bytearray] = field(default_factory=dict)


def parse_execute(payload: bytes, stmt: Prepared) -> tuple[int, list[bytes | None], list[str | None]]:
    """(flags, the bytes each parameter binds, what an approver is shown)."""
    if len(payload) < 10:
        raise ProtocolError("a short COM_STMT_EXECUTE")
    flags = payload[5]
    n = stmt.params
    if not n:
        return flags, [], []
    pos = 10
    bitmap = payload[pos:pos + (n + 7) // 8]
    pos += len(bitmap)
    if len(bitmap) != (n + 7) // 8 or pos >= len(payload):
        raise ProtocolError("a COM_STMT_EXECUTE without its parameters")
    if payload[pos] == 1:
        stmt.types = payload[pos + 1:pos + 1 + 2 * n]
        pos += 1 + 2 * n
    else:
        pos += 1
    if len(stmt.types) != 2 * n:
        raise ProtocolError("parameters without their types")
    raw: list[bytes | None] = []
    shown: list[str | None] = []
    for i in range(n):
        type_, unsigned = stmt.types[2 * i], stmt.types[2 * i + 1] & 0x80
        if bitmap[i // 8] & (1 << (i % 8)):
            raw.append(None)
            shown.append(None)
            continue
        if i in stmt.long_data:
            value = bytes(stmt.long_data[i])
            raw.append(b"L" + value)
            shown.append(value.decode("utf-8", "replace"))
            continue
        start = pos
        if type_ in rows.LENENC_TYPES:
            value, pos = lenenc_str(payload, pos)
            raw.append(payload[start:pos])
            shown.append((value or b"").decode("utf-8", "replace"))
            continue
        if type_ in rows.FIXED:
            pos += rows.FIXED[type_]
        elif type_ in rows.TEMPORAL:
            pos += 1 + payload[pos]
        else:
            raise ProtocolError(f"a parameter of unknown type {type_}")
        if pos > len(payload):
            raise ProtocolError("parameters run past the packet")
        value = payload[start:pos]
        raw.append(bytes((type_, unsigned)) + value)
        if type_ in rows.NUMBERS:
            fmt = rows.NUMBERS[type_]
            shown.append(str(struct.unpack(fmt.upper() if unsigned and fmt[1] in "bhiq" else fmt, value)[0]))
        else:
            shown.append(temporal(type_, value))
    if pos != len(payload):
        raise ProtocolError("bytes after the last parameter")
    return flags, raw, shown


def temporal(type_: int, value: bytes) -> str:
    """A binary DATE/DATETIME/TIMESTAMP/TIME as text."""
    n, b = value[0], value[1:]
    if type_ in (0x0B, 0x13):  # TIME: sign, days, h, m, s[, µs]
        if n == 0:
            return "00:00:00"
        neg, days, h, m, s = b[0], struct.unpack_from("<I", b, 1)[0], b[5], b[6], b[7]
        us = f".{struct.unpack_from('<I', b, 8)[0]:06d}" if n >= 12 else ""
        return f"{'-' if neg else ''}{days * 24 + h:02d}:{m:02d}:{s:02d}{us}"
    if n == 0:
        return "0000-00-00"
    y, mo, d = struct.unpack_from("<H", b, 0)[0], b[2], b[3]
    out = f"{y:04d}-{mo:02d}-{d:02d}"
    if n >= 7:
        out += f" {b[4]:02d}:{b[5]:02d}:{b[6]:02d}"
    if n >= 11:
        out += f".{struct.unpack_from('<I', b, 7)[0]:06d}"
    return out
