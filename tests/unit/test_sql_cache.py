"""classify_postgres_cached: texts that differ only in numbers share one parse (pure)."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from app.sql import cache, classify_postgres, classify_postgres_cached


def test_same_answer_as_the_parser_and_one_entry_per_shape():
    cache._cache.clear()
    for aid in (111, 222, 333, 4444):
        sql = f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}; SELECT {aid}"
        assert classify_postgres_cached(sql) == classify_postgres(sql)
    assert len(cache._cache) == 2  # numbers keep their length: one shape for 3 digits, one for 4
    cache._cache.clear()


@pytest.mark.parametrize("sql", [
    "SELECT 'a1'; DROP TABLE t2",           # a quote: untouched
    "SELECT 1 -- 2\n; DROP TABLE t",        # a comment
    "SELECT $1, 2",                          # a dollar sign
    'SELECT "c1" FROM t WHERE x = 5',        # a quoted identifier
    "SELECT 1 FROM t9 WHERE c = 3",          # digits inside names are not numbers
    "SELECT 'é', 1",                         # not ASCII
])
def test_texts_a_number_could_hide_in_match_the_parser(sql):
    assert classify_postgres_cached(sql) == classify_postgres(sql)


def test_statement_texts_cut_the_original_text():
    sts = classify_postgres_cached("select 7;  DELETE FROM orders WHERE id = 12345")
    assert [s.text for s in sts] == ["select 7", "DELETE FROM orders WHERE id = 12345"]
    assert [s.kind for s in sts] == ["read", "write"]


def test_the_relay_uses_it():
    from app.relay.postgres import checks
    ops = checks.operations("SELECT 1; DROP TABLE t", "db")
    assert [(o.kind, o.connection, o.text) for o in ops] == [("read", "db", "SELECT 1"), ("ddl", "db", "DROP TABLE t")]


_LOOKAROUND = re.compile(r"(?<![A-Za-z0-9_])[0-9]+(?![A-Za-z0-9_])")  # the plain way to say it


@given(st.text(alphabet="0123456789 _aZx.(),;e-+'é", max_size=40))
def test_standalone_numbers_are_found_exactly_as_the_plain_pattern_finds_them(text):
    assert cache.NUMBER.sub("#", text) == _LOOKAROUND.sub("#", text)
