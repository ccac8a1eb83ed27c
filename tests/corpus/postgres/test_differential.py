"""Differential test of SQL classification: the oracle is the server itself.

Every corpus statement, and hypothesis-made variants of them (comments, letter case,
whitespace, other quoting of the same strings, EXPLAIN option order, extra statements
around), runs directly on a scratch database inside a transaction that is rolled back.
What PostgreSQL reports it did (command tags, a transaction id assigned, tuples written,
the current role changed) gives the server's kind; the relay's classifier must never
rate lower anything the server executed as a write, DDL, DCL or admin.

The bounded run (make test) tries AIRLOCK_PG_DIFF_EXAMPLES variants (default 1000, a few seconds); a
longer one (the suite-wide pytest timeout must go):
    AIRLOCK_PG_DIFF_EXAMPLES=20000 pytest --timeout 0 tests/corpus/postgres/test_differential.py
"""
from __future__ import annotations

import os
import random
import re
import secrets

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast import parser

from app.relay.postgres.checks import operations
from app.types import KINDS
from tests.integration.postgres.conftest import ADMIN_DSN, SCHEMA

from .corpus import CASES, relay_rank, texts
from .test_corpus import SETUP

READ, TCL, WRITE, DDL, DCL, ADMIN = range(6)
EXAMPLES = int(os.environ.get("AIRLOCK_PG_DIFF_EXAMPLES", "1000"))
_TX_WORDS = re.compile(r"^\s*(begin|start|commit|end|rollback|abort|savepoint|release|prepare\s+transaction)\b",
                       re.I)

_TAGS: list[tuple[str, int]] = [
    *[(t, DCL) for t in ("CREATE ROLE", "ALTER ROLE", "DROP ROLE", "GRANT", "REVOKE", "ALTER DEFAULT PRIVILEGES",
                         "REASSIGN OWNED", "DROP OWNED", "CREATE POLICY", "ALTER POLICY", "DROP POLICY",
                         "SECURITY LABEL", "DISCARD ALL")],
    *[(t, ADMIN) for t in ("CREATE EXTENSION", "ALTER EXTENSION", "DROP EXTENSION", "ALTER SYSTEM", "LOAD",
                           "VACUUM", "ANALYZE", "CLUSTER", "REINDEX", "CHECKPOINT", "DO", "CALL",
                           "CREATE LANGUAGE", "CREATE SUBSCRIPTION", "CREATE PUBLICATION")],
    *[(t, WRITE) for t in ("INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "LOCK TABLE", "NOTIFY", "REFRESH")],
    *[(t, DDL) for t in ("CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT")],
]


_STATE = ("SELECT pg_current_xact_id_if_assigned() IS NOT NULL, current_user, "
          "(SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables)")


def _locks_rows(sql: str) -> bool:
    """SELECT ... FOR UPDATE/SHARE anywhere (read from the parse tree: comments and
    spacing may sit between FOR and UPDATE)."""
    try:
        return '"lockingClause"' in parser.parse_sql_json(sql)
    except Exception:  # noqa: BLE001 - unparseable here: count any xid as a write
        return False


def tag_rank(tag: str) -> int:
    for prefix, rank in _TAGS:
        if tag == prefix or tag.startswith(prefix + " "):
            return rank
    return READ


class Oracle:
    """A superuser session on a scratch database; every statement rolled back."""

    def __init__(self, db: str):
        self.db = db
        self.conn = self._connect()
        self.ran = 0

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(f"{ADMIN_DSN} dbname={self.db} options='-c statement_timeout=3000 "
                               f"-c lock_timeout=1000'")

    def rank(self, sql: str) -> int | None:
        """The server's kind for what `sql` did, or None when it did not run."""
        conn = self.conn
        try:
            with conn.cursor() as cur:
                # The backend's pending counts outlive a rollback until they are flushed:
                # what this statement wrote is the difference.
                role, before = cur.execute(_STATE).fetchone()[1:]
                cur.execute(sql)
                tags = [cur.statusmessage or ""]
                while cur.nextset():
                    tags.append(cur.statusmessage or "")
                xid, role_now, after = cur.execute(_STATE).fetchone()
                written = after != before
        except psycopg.Error:
            self._reset()
            return None
        self._reset()
        self.ran += 1
        rank = max(tag_rank(t) for t in tags)
        if written or (xid and not _locks_rows(sql)):  # row locks take an xid without writing
            rank = max(rank, WRITE)
        if role_now != role:
            rank = max(rank, DCL)
        return rank

    def _reset(self) -> None:
        try:
            self.conn.rollback()
            self.conn.execute("RESET ALL")
            self.conn.rollback()
        except psycopg.Error:
            self.conn.close()
            self.conn = self._connect()


@pytest.fixture(scope="module")
def oracle():
    db = f"airlock_diff_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    try:
        with psycopg.connect(f"{ADMIN_DSN} dbname={db}", autocommit=True) as conn:
            conn.execute(SCHEMA)
            conn.execute(SETUP)
            conn.execute("INSERT INTO audit_log (what) VALUES ('one'), ('two'); INSERT INTO corpus_victim VALUES (1)")
            conn.execute("PREPARE corpus_p AS SELECT 1")  # per session: EXECUTE fails elsewhere, harmlessly
        o = Oracle(db)
        yield o
        o.conn.close()
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def runnable(sql: str) -> bool:
    """Statements the oracle may run: not transaction control (it would end the rolled-back
    transaction), not settings of how text is read (the relay corpus covers those)."""
    ops = operations(sql, "diff")
    return not any(_TX_WORDS.match(op.text) or {"reparse", "parser_divergence"} & op.attributes
                   or "copy" in op.text[:4].lower() for op in ops)


STATEMENTS = sorted({t for case in CASES if case.get("oracle", True) for t in texts(case) if runnable(t)})


def _check(oracle: Oracle, sql: str) -> str | None:
    """A mismatch, described, or None."""
    server = oracle.rank(sql.replace("{db}", oracle.db))
    if server is None or server < WRITE:
        return None
    relay = relay_rank(sql)
    if relay < server:
        return f"{sql!r}: server did {KINDS[server]}, relay said {KINDS[relay]}"
    return None


def test_corpus_statements_match_the_server(oracle):
    assert len(STATEMENTS) >= 100
    mismatches = [m for m in (_check(oracle, sql) for sql in STATEMENTS) if m]
    assert not mismatches, "\n".join(mismatches)
    # Most corpus statements really ran (the rest the server refused: nothing to compare).
    assert oracle.ran >= 60, oracle.ran


# -- variants ---------------------------------------------------------------------------

COMMENTS = [" /* x */ ", " /* a /* b */ c */ ", " --c\n", "\n", "\t", " /**/", "\r\n"]


def _tokens(sql: str):
    try:
        return parser.scan(sql)
    except Exception:  # noqa: BLE001 - not scannable: no variant of it
        return []


def _requote(value: str, style: int) -> str:
    if style == 0:
        return "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if style == 1 and "$$" not in value and not value.endswith("$"):
        return "$$" + value + "$$"
    if style == 2 and "$q$" not in value and not value.endswith("$"):
        return "$q$" + value + "$q$"
    if style == 3:
        return "U&'" + "".join(f"\\{ord(ch):04x}" if ch.isalpha() else ch.replace("\\", "\\\\")
                                   .replace("'", "''") for ch in value) + "'"
    return "'" + value.replace("'", "''") + "'"


@st.composite
def variants(draw) -> str:
    """A corpus statement changed 1-4 times. Every change draws the same values whatever
    the text is (indices are taken modulo what is there), so that hypothesis replays and
    shrinks examples consistently."""
    sql = draw(st.sampled_from(STATEMENTS))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["comment", "case", "requote", "multi", "explain", "space"]))
        pick = draw(st.integers(0, 1 << 16))
        choice = draw(st.integers(0, 1 << 16))
        tokens = _tokens(sql)
        if not tokens:
            break
        if how == "comment":
            tok = tokens[pick % len(tokens)]
            sql = sql[:tok.end + 1] + COMMENTS[choice % len(COMMENTS)] + sql[tok.end + 1:]
        elif how == "case":
            flips = random.Random(pick)
            out, pos = [], 0
            for tok in tokens:
                word = sql[tok.start:tok.end + 1]
                out.append(sql[pos:tok.start])
                plain = tok.kind != "NO_KEYWORD" or (tok.name == "IDENT" and not word.startswith('"'))
                out.append(word.swapcase() if plain and flips.random() < 0.5 else word)
                pos = tok.end + 1
            sql = "".join(out) + sql[pos:]
        elif how == "requote":
            plain = [t for t in tokens if t.name == "SCONST" and sql[t.start] == "'"]
            if plain:
                tok = plain[pick % len(plain)]
                value = sql[tok.start + 1:tok.end].replace("''", "'")
                sql = sql[:tok.start] + _requote(value, choice % 5) + sql[tok.end + 1:]
        elif how == "multi":
            sql = ["SELECT 1; {}", "{}; SELECT 1", "SELECT 1;{};SELECT 2", "; {}"][choice % 4].format(sql)
        elif how == "explain":
            m = re.match(r"(?is)^\s*explain\s*\((.*?)\)(.*)$", sql)
            if m:
                options = [o.strip() for o in m.group(1).split(",")]
                random.Random(pick).shuffle(options)
                sql = f"EXPLAIN ({', '.join(options)}){m.group(2)}"
        else:
            spaces = [i for i, ch in enumerate(sql) if ch == " "]
            if spaces:
                i = spaces[pick % len(spaces)]
                sql = sql[:i] + ["\n", "\t", "\r", "  ", "\f"][choice % 5] + sql[i + 1:]
    return sql


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sql=variants())
def test_variants_never_read_what_the_server_wrote(oracle, sql):
    if not runnable(sql):
        return
    mismatch = _check(oracle, sql)
    assert mismatch is None, mismatch
