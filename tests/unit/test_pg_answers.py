"""Pure helpers of the relay's answer side: row samples, command tags, event JSON."""
from __future__ import annotations

import datetime
import json
import struct

import pytest

from app.relay.postgres.protocol import ProtocolError, data_row, parse_data_row, sample_cells, sample_row
from app.relay.postgres.protocol import command_tag as _command_tag
from app.relay.session import _json


def _body(values: list) -> memoryview:
    return memoryview(data_row(values))[5:]


@pytest.mark.parametrize("values", [
    [],
    [b"0"],
    [None, b"", b"abc", None],
    [b"x" * 5000],  # cut to 500 characters
    ["é".encode() * 1500],  # multi-byte: cut by characters, not bytes
    [b"\xff\xfe bad utf-8", "日本".encode()],
])
def test_a_sampled_row_is_its_cells_cut_as_the_recording_keeps_them(values):
    body = _body(values)
    assert sample_row(body) == sample_cells(parse_data_row(body))
    assert all(v is None or len(v) <= 500 for v in sample_row(body))


def test_a_sampled_cell_is_the_first_500_characters():
    assert sample_row(_body([b"a" * 499 + "é".encode() * 10])) == ["a" * 499 + "é"]
    assert sample_row(_body([None, b"1"])) == [None, "1"]


def test_a_negative_cell_count_samples_no_cells():
    assert sample_row(memoryview(struct.pack("!h", -1))) == [] == parse_data_row(memoryview(struct.pack("!h", -1)))


@pytest.mark.parametrize("body", [
    b"",
    b"\x00",
    struct.pack("!h", 1),  # no length
    struct.pack("!hi", 1, 5) + b"abc",  # value runs past the end
    struct.pack("!hi", 1, -2),  # negative length other than NULL
    struct.pack("!hi", 2, 1) + b"a" + b"\x00\x00",  # second length cut short
])
def test_a_malformed_row_is_refused_as_parse_data_row_refuses_it(body):
    with pytest.raises(ProtocolError):
        parse_data_row(memoryview(body))
    with pytest.raises(ProtocolError):
        sample_row(memoryview(body))


@pytest.mark.parametrize("body, expected", [
    (b"SELECT 1\0", ("SELECT 1", 1)),
    (b"INSERT 0 25\0", ("INSERT 0 25", 25)),
    (b"FETCH 0\0", ("FETCH 0", 0)),
    (b"BEGIN\0", ("BEGIN", None)),
    (b"SET\0\0", ("SET", None)),
    (b"\0", ("", None)),
    (b"", ("", None)),
    (b"CUSTOM \xff\0", ("CUSTOM \ufffd", None)),
])
def test_a_command_tag_gives_its_text_and_the_row_count_it_ends_with(body, expected):
    assert _command_tag(body) == expected
    assert _command_tag(body) == expected  # cached: the same answer again


def test_event_json_is_what_the_standard_encoder_writes():
    standard = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode
    events = [
        {},
        {"sql": "SELECT abalance FROM pgbench_accounts WHERE aid = 7", "rule": "r", "ms": 0.123, "tag": "SELECT 1",
         "rows": 1, "columns": ["abalance"], "sample": [["0"]]},
        {"sql": "SELECT 'é', '\"\\\n\x00'", "masks": ["pii"], "ms": 12.5, "rows": 0, "truncated": True,
         "sample": [[None, "日本", "\u2028"]], "error": {"code": "42P01", "message": None}},
        {"sql": "x", "params": ["1", None], "when": datetime.datetime(2024, 1, 2, 3, 4, 5), "big": 10**30,
         "neg": -1.5e-7, "nested": {"a": [1, 2.0, {"b": False}]}},
        {"fatal": "08P01", "message": "airlock lost track"},
    ]
    for event in events:
        assert _json(event) == standard(event)
        assert json.loads(_json(event)) == json.loads(standard(event))
