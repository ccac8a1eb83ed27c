"""Relaying one command's answer from the target to the client: result sets (text or
binary rows, several in a row), OK and ERR, masked as the plan says; and what the
recording keeps of it.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from app.masking import Masker

from . import rows, wire

FLUSH_BYTES = 1 << 16


@dataclass
class Answer:
    """What the client got, for the recording and for the session's bookkeeping."""

    results: list[dict] = field(default_factory=list)
    status: int = 0  # the last OK/EOF status flags
    error: tuple[int, str, str] | None = None
    ms: float = 0.0


async def relay(target: asyncio.StreamReader, client: wire.Framer, *, binary: bool, masker: Masker | None,
                sample_rows: int, limit: int) -> Answer:
    """Read the target's answer to the command just sent and send it on (renumbered)."""
    t0 = time.perf_counter()
    answer = Answer()
    while True:
        first = await wire.read_payload(target, limit)
        head = first[:1]
        if head == b"\xff":
            client.add(first)
            answer.error = wire.parse_error(first)
            answer.results.append({"error": {"code": answer.error[0], "message": answer.error[2]}})
            break
        if head == b"\x00":
            client.add(first)
            affected, last_id, answer.status = wire.ok_status(first)
            result = {"tag": f"OK {affected}", "affected_rows": affected}
            if last_id:
                result["last_insert_id"] = last_id
            answer.results.append(result)
            if not answer.status & wire.MORE_RESULTS:
                break
            continue
        if head == b"\xfb":  # LOCAL INFILE: never negotiated, so never honoured
            raise wire.ProtocolError("the target asked for a local file")
        more = await _result_set(first, target, client, binary, masker, sample_rows, limit, answer)
        if not more:
            break
    await client.flush()
    answer.ms = round((time.perf_counter() - t0) * 1000, 3)
    return answer


async def _result_set(first: bytes, target, client: wire.Framer, binary: bool, masker, sample_rows: int,
                      limit: int, answer: Answer) -> bool:
    count, _ = wire.lenenc_int(first, 0)
    columns = [rows.parse_column(await wire.read_payload(target, limit)) for _ in range(count or 0)]
    end = await wire.read_payload(target, limit)
    if not wire.is_eof(end):
        raise wire.ProtocolError("no EOF after the column definitions")
    plan = rows.plan(masker, columns)
    client.add(first)
    for definition in rows.definitions(plan):
        client.add(definition)
    client.add(end)
    sample: list[list] = []
    total = 0
    pending = 0
    while True:
        payload = await wire.read_payload(target, limit)
        if wire.is_eof(payload):
            client.add(payload)
            answer.status = wire.eof_status(payload)
            break
        if payload[:1] == b"\xff":
            client.add(payload)
            answer.error = wire.parse_error(payload)
            answer.results.append({"error": {"code": answer.error[0], "message": answer.error[2]}})
            return False
        total += 1
        values = None
        if plan.needs_work:
            payload, values = (rows.mask_binary_row if binary else rows.mask_text_row)(masker, plan, payload)
        if len(sample) < sample_rows:
            if values is None:
                values = rows.binary_values(plan, payload) if binary else rows.text_values(payload, len(columns))
            sample.append([shown(v, c) for v, c in zip(values, columns)])
        client.add(payload)
        pending += len(payload)
        if pending >= FLUSH_BYTES:
            await client.flush()
            pending = 0
    result = {"columns": [c.name for c in columns], "sample": sample, "rows": total}
    if total > len(sample):
        result["truncated"] = True
    if masker is not None and plan.needs_work:
        result["masked_columns"] = [columns[i].name for i, _ in plan.masked]
    answer.results.append(result)
    return bool(answer.status & wire.MORE_RESULTS)


def shown(value: bytes | None, col: rows.Column) -> str | None:
    if value is None:
        return None
    if col.charset == 63 and col.type in rows.STRING_TYPES:  # binary strings
        return "0x" + value.hex() if len(value) <= 64 else f"0x{value[:64].hex()}… ({len(value)} bytes)"
    return value.decode("utf-8", "replace")


def output_event(sql: str, answer: Answer, rule: str | None, masks: list[str], params=None) -> dict:
    """One output event: the statement, then its (first) result's parts at the top level,
    as the PostgreSQL relay records them (the portal's replay reads these keys)."""
    event: dict = {"sql": sql, "ms": answer.ms}
    if params is not None:
        event["params"] = list(params)
    if rule:
        event["rule"] = rule
    if masks:
        event["masks"] = masks
    if answer.results:
        event.update(answer.results[0])
    if len(answer.results) > 1:
        event["results"] = answer.results
    return event
