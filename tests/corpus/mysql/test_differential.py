"""The classifier against MariaDB as the oracle, for every corpus case (and a few more).

A text the classifier rates read or tcl runs on the server in a READ ONLY session (in a
transaction rolled back where one is open): the server must not find anything to write
(error 1792 would mean it wanted to), and it must answer as many statements as the
classifier found before any error. Texts rated write or above are not run: the
classifier is already at least as strict as the server could be.

MariaDB also refuses statements in a READ ONLY transaction that lock rows or are only
explained (SELECT ... FOR UPDATE, EXPLAIN DELETE). For those the oracle is the data:
every table's CHECKSUM before and after running the text in a transaction that is
then rolled back, and nothing may have changed.
"""
from __future__ import annotations

import pymysql
import pytest

from app.sql.mysql import classify_mysql
from app.types import KINDS

from .corpus import CASES, text_of

pytestmark = pytest.mark.timeout(120)

EXTRA = [
    "SELECT 1; SELECT 2; SELECT 3",
    "SELECT 'x;y' AS a; SELECT \"p;q\"",
    "SELECT 1 /*!50000 + 1 */",
    "SELECT 1 /*!50000 ; SELECT 2 */",
    "SELECT 1 /*M!100000 ; SELECT 2 */",
    "SELECT 1 -- ; SELECT 2",
    "SELECT 1 --1; SELECT 2",
    "SELECT `a;b` FROM (SELECT 1 AS `a;b`) x; SELECT 2",
    "SELECT 'a\\'; SELECT 2; -- '",
    "SELECT 'a\\\\'; SELECT 2; -- '",
    "DO 1; SELECT 2",
    "SET @a = 1; SELECT @a",
    "SELECT 1 # ; SELECT 2\n; SELECT 3",
]
TEXTS = [(c["id"], c["send"]) for c in CASES if c.get("oracle", True)] + [(f"extra-{i}", t) for i, t in
                                                                           enumerate(EXTRA)]


@pytest.fixture(scope="module")
def oracle(target):
    with target.admin() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS corpus_victim (id int)")
        cur.execute("DROP PROCEDURE IF EXISTS corpus_proc")
        cur.execute("CREATE PROCEDURE corpus_proc() SELECT 1")
    conn = pymysql.connect(host="127.0.0.1", port=3306, user=target.user, password=target.password,
                           database=target.db, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
                           autocommit=True)
    yield conn
    conn.close()


@pytest.mark.parametrize("name, raw", TEXTS, ids=[n for n, _ in TEXTS])
def test_never_read_when_the_server_writes(oracle, target, name, raw):
    text = raw.replace("{db}", target.db)
    statements = classify_mysql(text)
    if max((KINDS.index(s.kind) for s in statements), default=0) > KINDS.index("tcl"):
        return  # rated write or above: nothing to disprove
    cur = oracle.cursor()
    answered = 0
    try:
        cur.execute("SET SESSION TRANSACTION READ ONLY")
        cur.execute("START TRANSACTION READ ONLY")
        try:
            cur.execute(text)
            answered = 1
            while cur.nextset():
                answered += 1
        except pymysql.err.MySQLError as exc:
            if exc.args[0] == 1792:
                oracle.rollback()
                cur.execute("SET SESSION TRANSACTION READ WRITE")
                assert unchanged(oracle, text), f"the server wrote, the classifier said read: {text!r}"
                return
            answered += 1  # the statement that failed was one the server parsed as a statement
            assert answered <= len(statements), "the server saw more statements than the classifier"
            return
        finally:
            oracle.rollback()
            cur.execute("SET SESSION TRANSACTION READ WRITE")
        # A comment after the last semicolon is one more (empty) answer from the server.
        tail = text[text.rfind(statements[-1].text) + len(statements[-1].text):].strip()
        rest = tail[1:].strip() if tail.startswith(";") else ""
        extra = 1 if rest and not classify_mysql(rest) else 0
        assert answered == len(statements) + extra, (answered, [s.text for s in statements])
    finally:
        cur.close()


def unchanged(conn, text: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
        tables = [r[0] for r in cur.fetchall()]
        listing = ", ".join(f"`{t}`" for t in tables)
        cur.execute(f"CHECKSUM TABLE {listing}")
        before = cur.fetchall()
        cur.execute("START TRANSACTION")
        try:
            cur.execute(text)
            while cur.nextset():
                pass
            cur.execute(f"CHECKSUM TABLE {listing}")
            after = cur.fetchall()
        finally:
            conn.rollback()
        return before == after
