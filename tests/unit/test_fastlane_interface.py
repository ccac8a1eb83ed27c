"""The fast lane (app/relay/postgres/_fastlane.c) through its explicit interface, with
fakes for the conversation: it carries a statement of a remembered shape and its whole
answer, and a callback that closes the lane, fails, or raises never crashes it nor
leaves an exception pending (the relay tests run it against real servers)."""
from __future__ import annotations

import struct

import pytest

from app.relay.postgres import fastlane
from app.relay.postgres._fastlane import Lane, WireBase, shape_key


TEXT = "SELECT id FROM t WHERE id = 7"


def frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


QUERY = frame(b"Q", TEXT.encode() + b"\0")
ANSWER = (frame(b"T", b"\0\x01id\0" + b"\0" * 18) + frame(b"D", b"\0\x01\0\0\0\x017")
          + frame(b"C", b"SELECT 1\0") + frame(b"Z", b"I"))


class Shape:
    stamp, lead, tail, rule, mask_names, masker = (1, 0), 0, 0, "reads", [], None


class End(WireBase):
    """One wire: what the Python path would have received."""

    def __init__(self, side: int) -> None:
        self.lane_side = side
        self.python: list[bytes] = []

    def received(self, data: bytes) -> None:
        self.python.append(data)


class Fakes:
    def __init__(self, **override) -> None:
        self.to_target: list[bytes] = []
        self.to_client: list[bytes] = []
        self.recorded: list[tuple] = []
        self.answered: list[tuple] = []
        self.handed_back: list[tuple] = []
        self.batch = 0
        calls = dict(
            at_rest=lambda: True, next_batch=self.next_batch, write_target=self.to_target.append,
            write_client=self.to_client.append, shapes={shape_key(TEXT): Shape()}, stamp=lambda: (1, 0),
            allowed_again=lambda shape: True, record=lambda *a: self.recorded.append(a), answer_json=object(),
            masked_answer=lambda *a: None, hand_back=lambda *a: self.handed_back.append(a),
            stream_at_rest=lambda: True, answered=lambda *a: self.answered.append(a), refuse_binary=False,
            sample_rows=10)
        calls.update(override)
        self.lane = Lane(**calls)
        self.client, self.target = End(0), End(1)
        self.client.lane = self.target.lane = self.lane

    def next_batch(self) -> int:
        self.batch += 1
        return self.batch


def test_the_lane_carries_a_remembered_shape_and_its_whole_answer():
    f = Fakes()
    f.client.data_received(QUERY)
    assert f.to_target == [QUERY] and f.client.python == [] and f.lane.pending
    f.target.data_received(ANSWER)
    assert f.to_client == [ANSWER] and f.target.python == []
    assert f.lane.carried == 1 and not f.lane.pending and f.batch == 1
    (kind, _, statement, rule, masks, ms, answer, rows), = f.recorded
    assert (kind, statement, rule, answer, rows) == ("output", TEXT, "reads", ANSWER[:-6], 10)
    assert f.answered == [(ord("I"), 1)]


def test_anything_else_goes_to_the_python_path_after_the_statement_in_flight_is_handed_back():
    f = Fakes()
    f.client.data_received(QUERY)
    f.target.data_received(b"N" + ANSWER[1:])  # not a plain answer
    assert f.to_client == [] and f.target.python == [b"N" + ANSWER[1:]]
    assert [h[0] for h in f.handed_back] == [TEXT] and f.lane.carried == 0 and not f.lane.pending


def test_a_shape_the_lane_does_not_know_goes_to_the_python_path():
    f = Fakes(shapes={})
    f.client.data_received(QUERY)
    assert f.to_target == [] and f.client.python == [QUERY] and f.batch == 0


def test_a_callback_that_closes_the_lane_does_not_crash_it():
    box = {}

    def closing(shape):
        box["f"].lane.close()
        return True

    f = box["f"] = Fakes(allowed_again=closing)
    f.client.data_received(QUERY)
    assert f.client.python == [QUERY] and f.to_target == [] and not f.lane.active
    f.target.data_received(ANSWER)  # a closed lane passes everything on
    assert f.target.python == [ANSWER]


def test_a_lane_closed_while_its_answer_goes_out_still_records_it():
    box = {}

    def write_and_close(data):
        box["f"].to_client.append(data)
        box["f"].lane.close()

    f = box["f"] = Fakes(write_client=write_and_close)
    f.client.data_received(QUERY)
    f.target.data_received(ANSWER)
    assert f.to_client == [ANSWER] and f.target.python == [] and len(f.recorded) == 1
    assert not f.lane.active and f.lane.carried == 1


def test_a_stream_closed_before_the_answer_leaves_it_to_the_python_path():
    box = {}

    def closing():
        box["f"].lane.close()
        return True

    f = box["f"] = Fakes(stream_at_rest=closing)
    f.client.data_received(QUERY)
    f.target.data_received(ANSWER)
    assert f.to_client == [] and f.target.python == [ANSWER] and f.recorded == []


def test_a_failing_check_before_anything_is_sent_falls_back_with_no_exception_left():
    def broken():
        raise RuntimeError("at_rest failed")

    f = Fakes(at_rest=broken)
    f.client.data_received(QUERY)  # would raise SystemError if an exception were left pending
    assert f.client.python == [QUERY] and f.to_target == []


def test_a_failure_after_the_answer_went_out_reaches_the_event_loop():
    def broken(*args):
        raise RuntimeError("recording failed")

    f = Fakes(record=broken)
    f.client.data_received(QUERY)
    with pytest.raises(RuntimeError, match="recording failed"):
        f.target.data_received(ANSWER)
    assert f.to_client == [ANSWER] and f.answered == []  # nothing called after the failure
