"""The MySQL relay's fast path, its pure parts: which texts share a remembered shape
(app/sql/mysql_shapes.py, app/gate/session_shapes.py) and the walk over a plain answer (app/relay/mysql/plain.py)."""
from __future__ import annotations

import struct

import pytest

from app.relay.mysql import plain, wire
from app.sql.mysql_shapes import shape_of


@pytest.mark.parametrize("a, b", [
    ("SELECT v FROM t WHERE id = 1", "SELECT v FROM t WHERE id = 22"),
    ("UPDATE t SET v = CONCAT('slap ', id) WHERE id = 5", "UPDATE t SET v = CONCAT('slap ', id) WHERE id = 77"),
    ("SELECT * FROM t1 LIMIT 10", "SELECT * FROM t1 LIMIT 3"),
    ("SELECT 'it''s', 1", "SELECT 'it''s', 2"),
])
def test_texts_that_differ_only_in_numbers_share_a_shape(a, b):
    assert shape_of(a) is not None and shape_of(a) == shape_of(b)


@pytest.mark.parametrize("a, b", [
    ("SELECT * FROM t1", "SELECT * FROM t2"),  # a digit inside a name is the name
    ("SELECT 'slap 1'", "SELECT 'slap 2'"),  # numbers inside strings stay as they are
    ("SELECT v FROM t WHERE v = 'a'", "SELECT v FROM t WHERE v = 'b'"),
])
def test_other_names_and_strings_are_other_shapes(a, b):
    assert shape_of(a) != shape_of(b)


@pytest.mark.parametrize("text", [
    "SELECT * FROM db.123",  # MySQL reads a number after a dot as a name
    "SELECT * FROM `1`",  # quoted names
    'SELECT "1"',  # a string, or a name under ANSI_QUOTES
    "SELECT 1 /*!50000 , 2 */",  # executable comments run
    "SELECT 1 # 2",
    "SELECT 1 -- 2",
    "SELECT 'a\\' 1",  # a backslash: where the string ends depends on sql_mode
    "SELECT @1",
    "SELECT a$1 FROM t",
    "SELECT 'open 1",  # an unterminated string
    "SELECT 'é', 1",  # not ASCII
    "SELECT 1.5",
])
def test_texts_where_a_number_may_be_more_than_a_literal_have_no_shape(text):
    assert shape_of(text) is None


def _packet(payload: bytes, seq: int) -> bytes:
    return struct.pack("<I", len(payload) | seq << 24) + payload


def _column(name: bytes) -> bytes:
    strings = [b"def", b"db", b"t", b"t", name, name]
    fixed = b"\x0c" + struct.pack("<HIBHB", 45, 80, 0xFD, 0, 0) + b"\0\0"
    return b"".join(bytes((len(s),)) + s for s in strings) + fixed


def _text_row(*values: bytes | None) -> bytes:
    return b"".join(wire.pack_lenenc_str(v) for v in values)


EOF_MORE = b"\xfe\0\0" + struct.pack("<H", 0x0002 | wire.MORE_RESULTS)
EOF_LAST = b"\xfe\0\0" + struct.pack("<H", 0x0002)


def _answer() -> bytes:
    """Two result sets (the first with 3 rows) and an OK: a multi-statement's answer."""
    payloads = [b"\x02", _column(b"id"), _column(b"v"), EOF_LAST, _text_row(b"1", b"one"), _text_row(b"2", None),
                _text_row(b"3", b"x" * 300), EOF_MORE, b"\x01", _column(b"n"), EOF_LAST, _text_row(b"9"),
                EOF_MORE, b"\x00\x02\x07" + struct.pack("<HH", 2, 0)]
    return b"".join(_packet(p, i + 1) for i, p in enumerate(payloads))


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_the_walk_passes_whole_packets_and_records_as_the_full_path(step):
    data = _answer()
    walk = plain.PlainAnswer(sample_rows=2, limit=1 << 20)
    packets = plain.Packets(walk)
    out = b""
    for i in range(0, len(data), step):
        assert not walk.done
        out += packets.feed(data[i:i + step])
    assert walk.done and out == data
    event = plain.render_output("SELECT ...", 1.5, "reads-ok", [], None, walk.kept, False, 2)
    assert event["columns"] == ["id", "v"] and event["rows"] == 3 and event["truncated"]
    assert event["sample"] == [["1", "one"], ["2", None]]
    assert event["rule"] == "reads-ok" and event["ms"] == 1.5
    second, ok = event["results"][1], event["results"][2]
    assert second == {"columns": ["n"], "sample": [["9"]], "rows": 1}
    assert ok == {"tag": "OK 2", "affected_rows": 2, "last_insert_id": 7}


def test_a_payload_over_16_mib_is_joined_across_its_packets():
    value = b"y" * (wire.MAX_CHUNK + 10)
    row = wire.pack_lenenc_str(value)
    framed, seq = wire.frame(row, 4)
    data = b"".join(_packet(p, i + 1) for i, p in enumerate([b"\x01", _column(b"v"), EOF_LAST])) + framed \
        + _packet(EOF_LAST, seq)
    walk = plain.PlainAnswer(sample_rows=1, limit=64 << 20)
    out = plain.Packets(walk).feed(data)
    assert walk.done and out == data
    (_, _, _, sample, total, _), = walk.kept
    assert total == 1 and sample == [row]


@pytest.mark.parametrize("data, why", [
    (_packet(b"\xfbfile.txt", 1), "local file"),
    (_packet(b"\x00\0\0\2\0\0\0", 1) + _packet(b"\x00\0\0\2\0\0\0", 2), "more than its answer"),
    (_packet(b"\x01", 1) + _packet(b"\x00", 2) + _packet(b"\xff\xff", 3), "no EOF"),
    (struct.pack("<I", 5000 | 1 << 24) + b"x" * 10, "more than 4096"),
])
def test_what_the_walk_refuses(data, why):
    with pytest.raises(wire.ProtocolError, match=why):
        plain.Packets(plain.PlainAnswer(sample_rows=1, limit=4096)).feed(data)


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x01", b"\xfe\x00"])
def test_a_truncated_first_packet_is_a_protocol_error(payload):
    """An empty packet, OK packets cut short, a column count cut short: the session ends
    (ProtocolError), not the relay's callback with an IndexError."""
    with pytest.raises(wire.ProtocolError):
        plain.Packets(plain.PlainAnswer(sample_rows=1, limit=4096)).feed(_packet(payload, 1))
