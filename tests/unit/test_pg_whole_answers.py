"""Whole plain answers (app/relay/postgres/answers.py): forwarded as received, decoded by the
recording writer into the same event the frame-by-frame path records."""
from __future__ import annotations

import json
import struct

import pytest

from app.masking import Masker
from app.recording_store import compact_json
from app.relay.postgres.answers import answer_json, plain_answer
from app.relay.postgres.checks import binary_refusal
from app.relay.postgres.stream import TargetStream
from app.relay.postgres.parity import Barriers
from app.relay.postgres.state import QUERY, Query
from app.types import MaskSpec

MASKER = Masker((MaskSpec(fields=("email",), rule="mask-pii"), MaskSpec(detectors=("credit_card",), rule="mask-pii")),
                b"salt")


def frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def description(*names: str) -> bytes:
    body = struct.pack("!h", len(names))
    for name in names:
        body += name.encode() + b"\0" + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0)
    return frame(b"T", body)


def row(*cells) -> bytes:
    body = struct.pack("!h", len(cells))
    for cell in cells:
        body += struct.pack("!i", -1) if cell is None else struct.pack("!i", len(cell)) + cell
    return frame(b"D", body)


def complete(tag: str) -> bytes:
    return frame(b"C", tag.encode() + b"\0")


READY = frame(b"Z", b"I")
ANSWERS = {
    "rows": description("id", "name") + row(b"1", b"ada") + row(b"2", None) + complete("SELECT 2"),
    "no rows": description("id") + complete("SELECT 0"),
    "insert": complete("INSERT 0 3"),
    "set": complete("SET"),
    "no count": description("QUERY PLAN") + row(b"Seq Scan on t") + row(b"  Filter: x") + complete("EXPLAIN"),
    "long and odd cells": description("v") + row("é".encode() * 3000) + row(b"\xff\xfe ok") + complete("SELECT 2"),
}


class Conversation:
    def __init__(self):
        self.outputs, self.answers, self.idle = [], [], []
        self.barriers = Barriers(None)  # none raised: ReadyForQuery is not watched

    def record_output(self, event):
        self.outputs.append(event)

    def record_answer(self, *statement_and_answer):
        text = answer_json(*statement_and_answer)
        event = json.loads(text)
        assert text == compact_json(event)  # as the recording would store the event itself
        self.answers.append(event)

    def target_idle(self, batch):
        self.idle.append(batch)

    def target_ready(self, batch, status):
        raise AssertionError("no barrier was raised")

    def lost_track(self, reason):
        raise AssertionError(reason)

    def binary_refusal(self, plan):
        return binary_refusal(plan)


class Client:
    def __init__(self):
        self.sent = b""

    def write(self, data):
        self.sent += bytes(data)


def run(answer: bytes, chunks: list[bytes], sample_rows: int = 20, masker=None, refuse_binary=False):
    conv, client = Conversation(), Client()
    stream = TargetStream(conv, client, sample_rows=sample_rows, max_frame=1 << 20, refuse_binary=refuse_binary)
    stream.expect(QUERY, Query(masker, [("SELECT stuff", "reads-ok")], ["mask-pii"] if masker else []), batch=7)
    for chunk in chunks:
        stream.data(chunk)
    if masker is None:
        assert client.sent == answer + READY  # forwarded unchanged either way
    assert conv.idle == [7] and not stream.queue and stream.status == b"I"
    conv.sent = client.sent
    return conv


def without_time(events):
    return [{k: v for k, v in e.items() if k != "ms"} for e in events]


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_the_writer_records_what_the_frame_by_frame_path_records(name):
    answer = ANSWERS[name]
    whole = run(answer, [answer + READY])
    assert whole.outputs == [] and len(whole.answers) == 1  # the fast path took it
    split = run(answer, [answer[:7], answer[7:] + READY])  # a chunk boundary: frame by frame
    assert split.answers == [] and len(split.outputs) == 1
    assert without_time(whole.answers) == without_time(split.outputs)
    assert whole.answers[0]["sql"] == "SELECT stuff" and whole.answers[0]["rule"] == "reads-ok"


MASKED = {
    "names and detectors": description("id", "email", "note") + row(b"1", b"ada@example.com", b"card 4111 1111 1111 1111")
    + row(b"2", None, b"nothing") + complete("SELECT 2"),
    "nothing masked in it": description("id") + row(b"1") + complete("SELECT 1"),
    "no rows": complete("INSERT 0 1"),
}


@pytest.mark.parametrize("name", sorted(MASKED))
def test_masked_answers_go_out_and_are_recorded_as_the_frame_by_frame_path_does(name):
    answer = MASKED[name]
    whole = run(answer, [answer + READY], masker=MASKER)
    split = run(answer, [answer[:7], answer[7:] + READY], masker=MASKER)
    assert whole.outputs == [] and split.answers == []
    assert whole.sent == split.sent  # the same masked bytes for the client
    assert b"ada@example.com" not in whole.sent and b"4111" not in whole.sent
    assert without_time(whole.answers) == without_time(split.outputs)


def test_masked_binary_results_to_refuse_go_frame_by_frame():
    # jsonb (oid 3802) in binary: a masked value the relay cannot rewrite in place
    answer = frame(b"T", struct.pack("!h", 1) + b"email\0" + struct.pack("!ihihih", 0, 0, 3802, -1, -1, 1)) \
        + row(b'\x01"ada@example.com"') + complete("SELECT 1")
    conv = run(answer, [answer + READY], masker=MASKER, refuse_binary=True)
    assert conv.answers == [] and b"ada@example.com" not in conv.sent and b"42501" in conv.sent


def test_more_rows_than_the_sample_keeps_go_frame_by_frame():
    answer = description("id") + b"".join(row(str(i).encode()) for i in range(5)) + complete("SELECT 5")
    conv = run(answer, [answer + READY], sample_rows=3)
    assert conv.answers == [] and conv.outputs[0]["truncated"] is True and len(conv.outputs[0]["sample"]) == 3


@pytest.mark.parametrize("chunk", [
    b"",
    READY,  # ReadyForQuery alone: nothing answered
    complete("SELECT 1") + READY[:-1],  # cut short
    complete("SELECT 1") + frame(b"Z", b"II"),  # a ReadyForQuery of the wrong size
    row(b"1") + complete("SELECT 1") + READY,  # rows without a RowDescription
    description("a") + frame(b"N", b"Mhi\0\0") + complete("SELECT 0") + READY,  # a notice
    frame(b"E", b"SERROR\0C42P01\0Mno\0\0") + READY,  # an error
    description("a") + complete("SELECT 0") + complete("SELECT 0") + READY,  # two statements
    complete("SELECT 0") + description("a") + READY,  # no CommandComplete last
    description("a") + b"D\x00\x00\x00\x02" + complete("SELECT 0") + READY,  # a length under 4
    description("a") + b"D\x7f\x00\x00\x00" + READY,  # a length past the end
])
def test_anything_else_is_not_a_plain_answer(chunk):
    assert plain_answer(chunk, 20) == -1


def test_a_plain_answer_ends_where_ready_for_query_starts():
    answer = ANSWERS["rows"]
    assert plain_answer(answer + READY, 20) == len(answer)
    assert plain_answer(answer + READY, 1) == -1  # two rows, a sample of one


def test_a_malformed_row_is_reported_in_the_event_not_raised():
    answer = description("a") + frame(b"D", struct.pack("!hi", 1, 50) + b"short") + complete("SELECT 1")
    assert plain_answer(answer + READY, 20) == len(answer)
    event = json.loads(answer_json("x", None, [], 0.5, answer, 20))
    assert event["sample_error"] and "sample" not in event


@pytest.mark.parametrize("sql", ['SELECT "a\\\\b", \'é\u2028\', E\'\\n\t\x01\'', "SELECT 1 -- </script>"])
def test_the_event_json_is_what_the_recording_would_write_for_any_text(sql):
    answer = description('na"me', "é") + row(b'"x"\\', "\u2028".encode()) + row(None, b"\x00") \
        + row(b"3", b"4") + complete("SELECT 3")
    text = answer_json(sql, 'rule "q"', ["m1", "m\u00e9"], 1.25, answer, 2)
    event = json.loads(text)
    assert text == compact_json(event)
    assert event == {"sql": sql, "rule": 'rule "q"', "masks": ["m1", "m\u00e9"], "ms": 1.25, "tag": "SELECT 3",
                     "rows": 3, "columns": ['na"me', "é"], "sample": [['"x"\\', "\u2028"], [None, "\x00"]],
                     "truncated": True}
