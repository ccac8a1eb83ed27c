"""The relay's C parts against the Python they stand in for: the fast lane's shape key
(app/relay/postgres/_fastlane.c) against app.sql.cache.NUMBER, its answer check against
pganswer.plain_answer, and the writer's answer scan (app/relay/postgres/_answers.c) against
pganswer.scan_answer. The lane as a whole runs under every relay test
(tests/integration/postgres, with and without it). The row loop of masked answers
(app/relay/postgres/_answers.c) runs there too, and against pganswer's Python here."""
from __future__ import annotations

import struct

from hypothesis import example, given
from hypothesis import strategies as st

from app.masking import Masker
from app.relay.postgres import answers as pganswer, fastlane
from app.relay.postgres._fastlane import plain_answer as c_plain_answer
from app.relay.postgres._fastlane import shape_key
from app.relay.postgres._answers import scan_answer as c_scan_answer
from app.relay.postgres.answers import plain_answer, scan_answer
from app.relay.postgres.protocol import ProtocolError
from app.sql.cache import NUMBER
from app.types import MaskSpec

SQL_CHARS = st.sampled_from(list("0123456789 aZ_=;.,()-+*/'\"$é\t\n") + ["1e5", "x1", "_9", "12a"])


def test_the_compiled_lane_is_built_and_on():
    assert fastlane.Lane is not None, "app/relay/postgres/_fastlane.c is not compiled: `pip install -e .` builds it"
    assert fastlane.enabled()


def test_the_compiled_answer_parts_are_used():
    assert pganswer._scan is c_scan_answer, "app/relay/postgres/_answers.c is not compiled: `pip install -e .` builds it"
    assert pganswer._mask_rows is not None


@given(st.lists(SQL_CHARS, max_size=60).map("".join).filter(str.isascii))
@example("SELECT abalance FROM pgbench_accounts WHERE aid = 123456;")
@example("1 a1 1a 1_ _1 11 1.5 x=-42;")
def test_shape_key_is_the_number_pattern(text):
    assert shape_key(text) == NUMBER.sub("0", text)


def _frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


FRAMES = st.one_of(
    st.builds(_frame, st.sampled_from([b"T", b"D", b"C", b"E", b"N", b"S"]), st.binary(max_size=12)),
    st.just(_frame(b"Z", b"I")), st.just(_frame(b"Z", b"T")),
    st.binary(min_size=1, max_size=8),  # garbage and cut frames
)


@given(st.lists(FRAMES, max_size=8).map(b"".join), st.integers(0, 4))
@example(_frame(b"T", b"x") + _frame(b"D", b"y") + _frame(b"C", b"SELECT 1\0") + _frame(b"Z", b"I"), 1)
@example(_frame(b"T", b"x") + _frame(b"D", b"y") * 2 + _frame(b"C", b"SELECT 2\0") + _frame(b"Z", b"I"), 1)
@example(_frame(b"C", b"BEGIN\0") + _frame(b"Z", b"T"), 0)
@example(_frame(b"D", b"y") + _frame(b"C", b"x\0") + _frame(b"Z", b"I"), 3)
@example(b"T\xff\xff\xff\xff" + _frame(b"Z", b"I"), 3)
def test_plain_answer_agrees_with_python(chunk, max_rows):
    assert c_plain_answer(chunk, max_rows) == plain_answer(chunk, max_rows)


CELLS = st.one_of(
    st.none(),
    st.text(max_size=8).map(str.encode),  # any character: quotes, backslashes, controls, non-ASCII
    st.binary(max_size=8),  # not UTF-8
    st.sampled_from([b"x" * 500, b"x" * 501, "\u00e9".encode() * 600, b"\xff" * 2001, b"\x7f\x1f\"\\"]),
)


def _row(cells) -> bytes:
    body = struct.pack("!h", len(cells))
    for cell in cells:
        body += struct.pack("!i", -1) if cell is None else struct.pack("!i", len(cell)) + cell
    return _frame(b"D", body)


ANSWER_FRAMES = st.one_of(
    st.lists(CELLS, max_size=4).map(_row),
    st.just(_frame(b"T", b"\0\1a\0" + bytes(18))), st.just(_frame(b"C", b"SELECT 3\0")),
    st.builds(_frame, st.sampled_from([b"D", b"T", b"C", b"N"]), st.binary(max_size=10)),  # odd bodies
    st.binary(min_size=1, max_size=6),  # garbage and cut frames
)


@given(st.lists(ANSWER_FRAMES, max_size=6).map(b"".join), st.integers(0, 3))
@example(_frame(b"D", b"\xff\xff"), 1)  # a negative cell count: no cells
@example(_frame(b"D", b"\0\1\xff\xff\xff\xfe"), 1)  # a negative cell size
@example(b"D\xff\xff\xff\xff", 1)  # a negative frame length
def test_answer_scan_agrees_with_python(answer, sample_rows):
    try:
        expected = scan_answer(answer, sample_rows)
    except (ProtocolError, struct.error, ValueError, IndexError):
        expected = None  # malformed: the C scan says so, and answer_json runs the Python to say how
    assert c_scan_answer(answer, sample_rows) == expected


def _description(*columns: tuple[str, int]) -> bytes:
    body = struct.pack("!h", len(columns))
    for name, oid in columns:
        body += name.encode() + b"\0" + struct.pack("!IhIhih", 0, 0, oid, -1, -1, 0)
    return _frame(b"T", body)


MASKERS = [
    Masker((MaskSpec(fields=("email",), rule="r"),), b"salt"),  # redacted by name
    Masker((MaskSpec(fields=("email",), strategy="partial", rule="r"),), b"salt"),
    Masker((MaskSpec(fields=("email",), strategy="hash", rule="r"),), b"salt"),
    Masker((MaskSpec(fields=("email",), rule="r"), MaskSpec(detectors=("email", "credit_card"), rule="d")), b"salt"),
]
ROW_CELLS = st.one_of(st.none(), st.sampled_from([b"", b"ada@example.com", b"4111 1111 1111 1111", b"\xff\xfe", b"x" * 40]))
DATA_ROWS = st.one_of(
    st.lists(ROW_CELLS, max_size=4).map(_row),
    st.builds(_frame, st.just(b"D"), st.binary(max_size=10)),  # malformed inside a well-framed DataRow
)


@given(st.sampled_from(range(len(MASKERS))), st.lists(DATA_ROWS, max_size=4), st.sampled_from([25, 23, 1043]))
@example(0, [_row([b"ada@example.com", None, b"1"])], 25)
@example(0, [_frame(b"D", b"\xff\xff")], 25)  # a negative cell count: a row of no cells
@example(0, [_frame(b"D", b"\0\1\0\0\0\1xtrailing")], 25)  # bytes after the last cell are dropped
def test_masked_rows_agree_with_python(masker_index, rows, oid):
    """The C row loop of masked_answer (app/relay/postgres/_answers.c) against the Python one."""
    masker = MASKERS[masker_index]
    chunk = (_description(("email", oid), ("note", 25), ("id", 23)) + b"".join(rows)
             + _frame(b"C", b"SELECT 1\0") + _frame(b"Z", b"I"))
    z = len(chunk) - 6

    def masked(with_c: bool):
        saved = pganswer._mask_rows
        pganswer._mask_rows = saved if with_c else None
        try:
            return pganswer.masked_answer(masker, chunk, z, False)
        except (ProtocolError, struct.error) as exc:
            return type(exc)
        finally:
            pganswer._mask_rows = saved

    assert masked(True) == masked(False)
