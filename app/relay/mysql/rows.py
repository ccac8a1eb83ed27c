"""Masking of MySQL result sets: column definitions and rows, text and binary (pure).

A `Plan` is worked out once per result set from its column definitions:
- a column masked by name is rewritten; if its type is not a string type it is announced
  as VAR_STRING utf8mb4 instead, so typed clients accept "[REDACTED]" in what was an
  integer or a date column (text and binary protocol alike);
- a column only scanned by detectors keeps its type: a hit in a string column is replaced
  in place; a number is read as text and becomes NULL on a hit; dates and times cannot
  carry a secret and pass.
Binary rows are read value by value (their layout depends on each column's type), so a
row whose layout we cannot follow is refused rather than passed on.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from app.masking import Masker

from .wire import ProtocolError, lenenc_int, lenenc_str, pack_lenenc_str

VAR_STRING = 0xFD
UTF8MB4 = 45
# Types whose value (text and binary protocol) is a length-encoded string.
LENENC_TYPES = frozenset({0x00, 0x0F, 0x10, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF})
STRING_TYPES = frozenset({0x0F, 0xF5, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE})
FIXED = {0x01: 1, 0x02: 2, 0x0D: 2, 0x03: 4, 0x09: 4, 0x04: 4, 0x05: 8, 0x08: 8, 0x06: 0}
TEMPORAL = frozenset({0x07, 0x0A, 0x0B, 0x0C, 0x0E, 0x11, 0x12, 0x13})
NUMBERS = {0x01: "<b", 0x02: "<h", 0x0D: "<h", 0x03: "<i", 0x09: "<i", 0x04: "<f", 0x05: "<d", 0x08: "<q"}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    table: str
    type: int
    charset: int
    flags: int
    raw: bytes

    @property
    def unsigned(self) -> bool:
        return bool(self.flags & 0x20)


def parse_column(payload: bytes) -> Column:
    pos = 0
    parts = []
    for _ in range(6):  # catalog, schema, table, org_table, name, org_name
        value, pos = lenenc_str(payload, pos)
        parts.append((value or b"").decode("utf-8", "replace"))
    _, pos = lenenc_int(payload, pos)
    if pos + 10 > len(payload):
        raise ProtocolError("a short column definition")
    charset, _length, type_, flags = struct.unpack_from("<HIBH", payload, pos)
    return Column(parts[4], parts[3] or parts[2], type_, charset, flags, payload)


def retyped(col: Column) -> bytes:
    """The definition announcing `col` as a utf8mb4 VAR_STRING (flags kept but BINARY,
    UNSIGNED and the like, which would mislead a client about text)."""
    pos = 0
    for _ in range(6):
        _, pos = lenenc_str(col.raw, pos)
    _, pos = lenenc_int(col.raw, pos)
    tail = struct.pack("<HIBHB", UTF8MB4, 1 << 16, VAR_STRING, col.flags & 0x0001, 0x1F) + b"\0\0"
    return col.raw[:pos] + tail


@dataclass(frozen=True, slots=True)
class Plan:
    columns: tuple[Column, ...]
    masked: tuple[tuple[int, int], ...]  # (column, strength)
    scan: tuple[int, ...]
    retype: frozenset[int]

    @property
    def needs_work(self) -> bool:
        return bool(self.masked or self.scan)


def plan(masker: Masker | None, columns: list[Column]) -> Plan:
    if masker is None or not masker.active:
        return Plan(tuple(columns), (), (), frozenset())
    base = masker.columns_plan([c.name for c in columns])
    retype = frozenset(i for i, _ in base.masked if columns[i].type not in STRING_TYPES)
    scan = tuple(i for i in base.scan if columns[i].type not in TEMPORAL and columns[i].type != 0x06)
    return Plan(tuple(columns), base.masked, scan, retype)


def definitions(p: Plan) -> list[bytes]:
    return [retyped(c) if i in p.retype else c.raw for i, c in enumerate(p.columns)]


def _mask(masker: Masker, p: Plan, values: list[bytes | None], decode_binary: bool) -> tuple[list, set[int]]:
    """Mask `values` in place; returns them and the columns set to NULL."""
    nulls: set[int] = set()
    for i, strength in p.masked:
        v = values[i]
        if v is not None:
            values[i] = masker.mask_cell(v, strength)
    for i in p.scan:
        v = values[i]
        if v is None:
            continue
        out = masker.mask_cell(v, -1)
        if out is not v:
            if p.columns[i].type in STRING_TYPES:
                values[i] = out
            else:  # a number with a hit would not parse as its type any more
                values[i] = None
                nulls.add(i)
    return values, nulls


def text_values(payload: bytes, n: int) -> list[bytes | None]:
    values, pos = [], 0
    for _ in range(n):
        v, pos = lenenc_str(payload, pos)
        values.append(v)
    if pos != len(payload):
        raise ProtocolError("a text row longer than its columns")
    return values


def mask_text_row(masker: Masker, p: Plan, payload: bytes) -> tuple[bytes, list]:
    values, _ = _mask(masker, p, text_values(payload, len(p.columns)), False)
    return b"".join(pack_lenenc_str(v) for v in values), values


def binary_values(p: Plan, payload: bytes) -> list[bytes | None]:
    """A binary row's values as text (numbers as their digits, strings as sent,
    temporal values as raw bytes): what masking and the recording read."""
    n = len(p.columns)
    if payload[:1] != b"\x00":
        raise ProtocolError("a binary row without its header")
    bitmap = payload[1:1 + (n + 9) // 8]
    pos = 1 + len(bitmap)
    values: list[bytes | None] = []
    for i, col in enumerate(p.columns):
        bit = i + 2
        if bitmap[bit // 8] & (1 << (bit % 8)):
            values.append(None)
            continue
        start = pos
        if col.type in LENENC_TYPES:
            v, pos = lenenc_str(payload, pos)
            values.append(v)
            continue
        if col.type in FIXED:
            pos += FIXED[col.type]
        elif col.type in TEMPORAL:
            pos += 1 + payload[pos]
        else:
            raise ProtocolError(f"a binary value of unknown type {col.type}")
        if pos > len(payload):
            raise ProtocolError("a binary row shorter than its columns")
        raw = payload[start:pos]
        if col.type in NUMBERS:
            fmt = NUMBERS[col.type]
            if col.unsigned and fmt[1] in "bhiq":
                fmt = fmt.upper()
            values.append(str(struct.unpack(fmt, raw)[0]).encode())
        else:
            values.append(raw)
    if pos != len(payload):
        raise ProtocolError("a binary row longer than its columns")
    return values


def mask_binary_row(masker: Masker, p: Plan, payload: bytes) -> tuple[bytes, list]:
    """The row with its masked values re-encoded: masked by name as strings (the column
    was retyped), a detector hit in a number as NULL; everything else as it was."""
    values = binary_values(p, payload)
    before = list(values)
    values, _ = _mask(masker, p, values, True)
    n = len(p.columns)
    bitmap = bytearray(payload[1:1 + (n + 9) // 8])
    out, pos = [], 1 + len(bitmap)
    for i, col in enumerate(p.columns):
        bit = i + 2
        if bitmap[bit // 8] & (1 << (bit % 8)):
            continue
        start = pos
        if col.type in LENENC_TYPES:
            _, pos = lenenc_str(payload, pos)
        elif col.type in FIXED:
            pos += FIXED[col.type]
        else:
            pos += 1 + payload[pos]
        if values[i] is None:
            bitmap[bit // 8] |= 1 << (bit % 8)
        elif i in p.retype or values[i] is not before[i]:
            out.append(pack_lenenc_str(values[i]))
        else:
            out.append(payload[start:pos])
    return b"\x00" + bytes(bitmap) + b"".join(out), values
