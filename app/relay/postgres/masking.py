"""Masking of result rows, planned once per RowDescription (pure, no I/O).

A `RowPlan` says, for one result shape, which cells the masker rewrites as text, which
become NULL, and which are checked by detectors and become NULL on a hit. The
choice depends on each column's type and format:

- text format: the value is text whatever its type. A column masked by name is
  rewritten, and its type in the RowDescription becomes `text`, so typed clients
  (psycopg, SQLAlchemy) accept "[REDACTED]" in what was an integer column. A column
  only scanned by detectors keeps its type: a hit in a text-like column is replaced
  in place; a hit elsewhere would not parse as that type, so the cell becomes NULL.
- binary format: text-like types are UTF-8 bytes and are masked like text. Integers
  and floats are decoded for the detectors and become NULL on a hit. Types that cannot
  carry a secret (booleans, dates and times, UUIDs) pass when only scanned. Every
  other masked binary cell becomes NULL, or the statement is refused (`refuse_binary`):
  an unmasked binary value never goes out.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from app.masking import ColumnPlan, Masker

from .protocol import Field, data_row, frame, parse_data_row, parse_row_description

TEXT_OID = 25
TEXTLIKE = frozenset({25, 1043, 1042, 19, 18, 114, 142, 705})  # text varchar bpchar name char json xml unknown
NUMBERS = {20: struct.Struct("!q"), 21: struct.Struct("!h"), 23: struct.Struct("!i"), 26: struct.Struct("!I"),
           700: struct.Struct("!f"), 701: struct.Struct("!d")}
INERT = frozenset({16, 1082, 1083, 1266, 1114, 1184, 1186, 2950})  # bool, dates/times, interval, uuid


@dataclass(frozen=True, slots=True)
class RowPlan:
    columns: tuple[str, ...]
    text: ColumnPlan  # cells the masker rewrites as text
    nulls: tuple[int, ...]  # always NULL (masked binary values we cannot rewrite)
    checks: tuple[tuple[int, struct.Struct | None], ...]  # NULL when a detector finds something
    retype: tuple[int, ...]  # columns announced as text instead of their own type
    cells: tuple[tuple[int, int], ...]  # (column, strength) for Masker.mask_cell: text.masked, then text.scan

    @property
    def needs_work(self) -> bool:
        return bool(self.text.masked or self.text.scan or self.nulls or self.checks)


def plan_rows(masker: Masker, fields: list[Field], formats: tuple[int, ...] | None = None) -> RowPlan:
    """The plan for rows described by `fields`; `formats` are a Bind's result formats
    (None: take each field's own format, as in a RowDescription that answers a query)."""
    names = tuple(f.name for f in fields)
    base = masker.columns_plan(names)
    fmt = [_format(formats, i) if formats is not None else f.format for i, f in enumerate(fields)]
    masked, scan, nulls, checks, retype = [], [], [], [], []
    for i, strength in base.masked:
        f = fields[i]
        if fmt[i] == 0:
            masked.append((i, strength))
            if f.type_oid not in TEXTLIKE:
                retype.append(i)
        elif f.type_oid in TEXTLIKE:
            masked.append((i, strength))
        else:
            nulls.append(i)
    for i in base.scan:
        oid = fields[i].type_oid
        if oid in TEXTLIKE:
            scan.append(i)
        elif fmt[i] == 0:
            checks.append((i, None))
        elif oid in NUMBERS:
            checks.append((i, NUMBERS[oid]))
        elif oid not in INERT:
            nulls.append(i)
    return RowPlan(names, ColumnPlan(names, tuple(masked), tuple(scan)), tuple(nulls), tuple(checks),
                   tuple(retype), tuple(masked) + tuple((i, -1) for i in scan))


def _format(formats: tuple[int, ...], i: int) -> int:
    if not formats:
        return 0
    return formats[i] if len(formats) > 1 else formats[0]


def rewrite_description(fields: list[Field], plan: RowPlan) -> bytes:
    """A RowDescription announcing the masked columns' new type."""
    retype = set(plan.retype)
    parts = [struct.pack("!h", len(fields))]
    for i, f in enumerate(fields):
        oid, typlen, typmod = (TEXT_OID, -1, -1) if i in retype else (f.type_oid, f.typlen, f.typmod)
        parts.append(f.name.encode() + b"\0")
        parts.append(struct.pack("!IhIhih", f.table_oid, f.attnum, oid, typlen, typmod, f.format))
    return frame(b"T", b"".join(parts))


def mask_row(masker: Masker, plan: RowPlan, body: memoryview) -> tuple[bytes, list]:
    """A masked DataRow frame, and its cells (for the recording)."""
    values = masker.mask_row(plan.text, parse_data_row(body))
    n = len(values)
    for i in plan.nulls:
        if i < n:
            values[i] = None
    for i, number in plan.checks:
        v = values[i] if i < n else None
        if v is None:
            continue
        if number is None:
            text = bytes(v).decode("utf-8", "replace")
        else:
            try:
                text = str(number.unpack(v)[0])
            except struct.error:
                values[i] = None
                continue
        if masker.mask_text(text) != text:
            values[i] = None
    return data_row(values), values


_QUERY_PLANS: dict[tuple, tuple] = {}  # (masker, RowDescription) -> (plan, names, rewritten description)


def query_plan(masker: Masker, body) -> tuple:
    """The mask plan for a simple query's RowDescription, worked out once per shape:
    a query that repeats sends the same RowDescription every time."""
    key = (masker, bytes(body))
    cached = _QUERY_PLANS.get(key)
    if cached is None:
        fields = parse_row_description(body)
        plan = plan_rows(masker, fields)  # immutable, as are the names and the frame
        rewritten = rewrite_description(fields, plan) if plan.retype else None
        if len(_QUERY_PLANS) >= 1024:
            _QUERY_PLANS.clear()
        cached = _QUERY_PLANS[key] = (plan, [f.name for f in fields], rewritten)
    return cached
