"""MySQL statement classification (pure): our own lexer decides what the server will
execute; sqlglot (dialect "mysql") reads the structure inside a statement.

sqlglot alone is not enough: it takes `/*!50000 DROP TABLE t */` for a comment, which
MySQL runs, and it turns statements it does not know into others (`FLUSH PRIVILEGES`
becomes a column alias, `SELECT 1 INTO @v` a CREATE TABLE). So boundaries, leading
keywords and the fingerprint's shape come from a lexer that follows the server: `#`
comments, `-- ` only with whitespace after it, `/*! */` and `/*M! */` executed,
backslash escapes, BEGIN ... END bodies. It assumes the server's default quoting, which
is why changing sql_mode to NO_BACKSLASH_ESCAPES/ANSI_QUOTES or the client charset to
gbk/sjis/big5 is admin. sqlglot adds tables, functions and nested writes (mysql_tree.py).
Kinds:

read   SELECT/TABLE/VALUES (also FOR UPDATE, INTO @var), SHOW, DESCRIBE, EXPLAIN, HELP,
       DO, HANDLER
tcl    BEGIN/START TRANSACTION/COMMIT/ROLLBACK/SAVEPOINT/RELEASE/XA, UNLOCK TABLES, USE,
       DEALLOCATE/DROP PREPARE, SET of session or user variables, SET NAMES utf8mb4
write  INSERT/REPLACE/UPDATE/DELETE, LOCK TABLES, LOAD DATA LOCAL ("load_data_local"),
       EXPLAIN ANALYZE of a write
ddl    CREATE/ALTER/DROP of schema objects, TRUNCATE, RENAME TABLE
dcl    GRANT/REVOKE, CREATE/ALTER/DROP/RENAME USER|ROLE, SET PASSWORD, SET [DEFAULT] ROLE
admin  SET GLOBAL/PERSIST/@@global.x, sql_log_bin and other superuser settings, FLUSH,
       KILL, RESET, PURGE, CHANGE, STOP, SHUTDOWN, RESTART, CLONE, INSTALL, BINLOG, CACHE/
       LOAD INDEX, IMPORT, ANALYZE/OPTIMIZE/REPAIR/CHECK, CALL, EXECUTE, LOAD DATA of a
       server file ("load_data_infile"), INTO OUTFILE/DUMPFILE ("into_outfile"),
       LOAD_FILE()/sys_exec(), UDF libraries ("udf_library"), servers, tablespaces,
       ALTER INSTANCE; anything unknown ("unknown") or unparseable ("unparseable").

Choices: versioned comments run whatever version they name ("versioned_comment").
PREPARE s FROM 'literal' is classified by the literal; FROM @var and EXECUTE are admin/
"unknown". A query or DML that sqlglot cannot parse is admin/"unparseable". UPDATE/
DELETE without a row-dependent WHERE are "unbounded", even with LIMIT. A stored
program's body stays in its CREATE (ddl), raised to dcl/admin by the keywords inside
("dangerous_keyword"), as is any DDL sqlglot cannot parse.
"""
from __future__ import annotations

import contextvars
import functools
import re

from sqlglot import exp

from .mysql_lexer import DEFAULT, LexError as _LexError, Mode, Tok as _Tok, lex as _lex, literal as _lit, name as _name
from .mysql_tree import parse, tree_facts
from .statement import ADMIN, CACHE_SIZE, DCL, DDL, READ, TCL, WRITE, Facts, Statement, classifier, failed, \
    with_attributes

_STRUCT = {"SELECT": READ, "WITH": READ, "TABLE": READ, "VALUES": READ, "(": READ, "DO": READ,
           "INSERT": WRITE, "REPLACE": WRITE, "UPDATE": WRITE, "DELETE": WRITE}
_FIXED = {
    **dict.fromkeys("SHOW HELP HANDLER".split(), READ),
    **dict.fromkeys("USE COMMIT ROLLBACK SAVEPOINT RELEASE XA UNLOCK DEALLOCATE".split(), TCL),
    "TRUNCATE": DDL, "GRANT": DCL, "REVOKE": DCL,
    **dict.fromkeys("FLUSH KILL RESET PURGE CHANGE STOP SHUTDOWN RESTART CLONE INSTALL UNINSTALL "
                    "BINLOG CACHE IMPORT ANALYZE OPTIMIZE REPAIR CHECK CHECKSUM CALL LOAD".split(),
                    ADMIN),
}
_OBJECTS = {
    **dict.fromkeys("TABLE VIEW INDEX DATABASE SCHEMA TRIGGER EVENT PROCEDURE FUNCTION "
                    "SEQUENCE SPATIAL".split(), DDL),
    "USER": DCL, "ROLE": DCL,
    **dict.fromkeys("SERVER TABLESPACE INSTANCE LOGFILE RESOURCE UNDO".split(), ADMIN),
}
_ROUTINES = frozenset("PROCEDURE FUNCTION TRIGGER EVENT".split())
_AFTER_INTO = frozenset("FROM WHERE GROUP HAVING ORDER LIMIT FOR LOCK UNION WINDOW ) ;".split())
_MODIFIERS = frozenset("LOW_PRIORITY HIGH_PRIORITY DELAYED QUICK IGNORE".split())
_ADMIN_WORDS = frozenset("KILL FLUSH SHUTDOWN RESTART INSTALL UNINSTALL PURGE CLONE BINLOG OUTFILE "
                         "DUMPFILE INFILE SONAME PREPARE EXECUTE GLOBAL PERSIST PERSIST_ONLY "
                         "LOAD_FILE SYS_EXEC SYS_EVAL".split())
_GLOBAL_VARS = ("@@GLOBAL.", "@@PERSIST")
_ADMIN_VARIABLES = frozenset("sql_log_bin gtid_next gtid_purged pseudo_thread_id pseudo_slave_mode "
                             "pseudo_replica_mode binlog_format binlog_row_image debug "
                             "sql_slave_skip_counter sql_replica_skip_counter".split())
_CHARSET_VARIABLES = frozenset(("character_set_client", "character_set_connection", "names",
                                "character set", "charset"))
# Not in this list: character sets (gbk, sjis, big5, cp932, gb18030, ...) in which a byte
# below 0x80 can be part of a multibyte character (a quote or a backslash, say), so the
# server would split strings differently. Anything not known safe is refused.
SAFE_CHARSETS = frozenset("utf8 utf8mb3 utf8mb4 latin1 latin2 ascii binary".split())
_SAFE_CHARSETS = SAFE_CHARSETS | {"default"}
# Not any word starting with a digit: `1t` is a table name in MySQL.
_NUMBER = re.compile(r"\d+(?:e\d+)?|0x[0-9a-fA-F]+|0b[01]+")
_SHAPE_FACTS: dict[tuple[Mode, str], Facts] = {}


_MODE: contextvars.ContextVar[Mode] = contextvars.ContextVar("mysql_mode", default=DEFAULT)


def classify_mysql(sql: str, mode: Mode = DEFAULT) -> list[Statement]:
    """Split MySQL text into statements and classify each one, lexed as the server does
    in `mode` (the session's sql_mode). Never raises."""
    return _classifier(mode)(sql)


@functools.cache
def _classifier(mode: Mode):
    def in_mode(sql: str) -> list[Statement]:
        token = _MODE.set(mode)
        try:
            return _classify(sql)
        finally:
            _MODE.reset(token)
    return classifier(in_mode)


def _literal(tok: _Tok) -> str:
    return _lit(tok, _MODE.get())


def _classify(sql: str) -> list[Statement]:
    try:
        tokens, clean, versioned = _lex(sql, _MODE.get())
        chunks = _split(tokens)
    except _LexError:
        return [failed(sql, "unparseable")]
    out = [_statement(sql, clean, chunk) for chunk in chunks]
    return [with_attributes(s, "versioned_comment") for s in out] if versioned else out


def _split(tokens: list[_Tok]) -> list[list[_Tok]]:
    """Statements end at semicolons, except inside a stored program's BEGIN ... END
    (and CASE ... END), as in the server's grammar."""
    chunks: list[list[_Tok]] = [[]]
    depth, routine = 0, False
    for i, tok in enumerate(tokens):
        if tok.text == ";" and depth == 0:
            chunks.append([])
            continue
        if not chunks[-1]:
            routine = _starts_routine(tokens, i)
        chunks[-1].append(tok)
        if routine and tok.kind == "word":
            nxt = tokens[i + 1].up if i + 1 < len(tokens) else ""
            if tok.up in ("BEGIN", "CASE") and not (i and tokens[i - 1].up == "END"):
                depth += 1
            elif tok.up == "END" and nxt not in ("IF", "LOOP", "WHILE", "REPEAT"):
                depth -= 1
    if depth:
        raise _LexError("unbalanced BEGIN ... END")
    return [chunk for chunk in chunks if chunk]


def _starts_routine(tokens: list[_Tok], i: int) -> bool:
    head = [t.up for t in tokens[i:i + 16]]
    if head[:2] == ["BEGIN", "NOT"]:
        return True  # MariaDB's anonymous BEGIN NOT ATOMIC block
    obj = next((w for w in head[1:] if w in _OBJECTS or w == ";"), "")
    return head[0] in ("CREATE", "ALTER") and obj in _ROUTINES


def _statement(sql: str, clean: str, toks: list[_Tok]) -> Statement:
    return _analyse(clean, toks).statement(sql[toks[0].start:toks[-1].end], _shape(toks))


def _shape(toks: list[_Tok]) -> str:
    """The statement as MySQL tokenises it, literals replaced by "?", case folded.
    Cheaper than sqlglot's generator, and it follows MySQL's lexing, not sqlglot's."""
    return " ".join("?" if t.kind == "str" or _NUMBER.fullmatch(t.text) else t.text.lower()
                    for t in toks)


def _analyse(clean: str, toks: list[_Tok]) -> Facts:
    first = toks[0].up
    second = toks[1].up if len(toks) > 1 else ""
    if first in _STRUCT:
        return _structured(clean, toks, _STRUCT[first])
    if first in ("EXPLAIN", "DESCRIBE", "DESC"):
        return _explain(clean, toks)
    if first == "SET":
        return _set(clean, toks)
    if first in ("CREATE", "ALTER", "DROP"):
        return _ddl(clean, toks)
    if first == "PREPARE":
        return _prepare(toks)
    if first == "EXECUTE":
        return Facts(ADMIN, "execute_prepared", "unknown")
    if first == "LOAD" and second in ("DATA", "XML"):
        local = any(t.up == "LOCAL" for t in toks[2:4])
        facts = Facts(WRITE, "load_data_local") if local else Facts(ADMIN, "load_data_infile")
        return _token_tables(toks, facts)
    if first in ("BEGIN", "START"):
        tcl = second in ("", "WORK") if first == "BEGIN" else second == "TRANSACTION"
        return Facts(TCL) if tcl else Facts(ADMIN, "unknown")
    if first == "LOCK":
        return _token_tables(toks, Facts(WRITE if second in ("TABLE", "TABLES") else ADMIN))
    if first == "RENAME":
        return Facts(DCL) if second == "USER" else _token_tables(toks, Facts(DDL), ("TO",))
    if first in _FIXED:
        return _token_tables(toks, Facts(_FIXED[first]))
    return Facts(ADMIN, "unknown")


def _structured(clean: str, toks: list[_Tok], rank: int) -> Facts:
    # Facts of a query or DML depend on its shape only (literals cannot add tables,
    # calls or writes), so texts that differ in literals share one sqlglot parse.
    key = (_MODE.get(), _shape(toks))
    facts = _SHAPE_FACTS.get(key)
    if facts is None:
        facts = _structured_uncached(clean, toks, rank)
        if len(_SHAPE_FACTS) >= CACHE_SIZE:
            _SHAPE_FACTS.clear()
        _SHAPE_FACTS[key] = facts
    return facts.copy()


def _structured_uncached(clean: str, toks: list[_Tok], rank: int) -> Facts:
    facts, first, drop = Facts(rank), toks[0], []
    for i, tok in enumerate(toks[:-1]):
        target = toks[i + 1]
        if tok.up == "INTO" and (target.kind == "var" or target.up in ("OUTFILE", "DUMPFILE")):
            # sqlglot cannot parse INTO OUTFILE and makes a CREATE TABLE of INTO @var:
            # the clause is judged here and blanked out for sqlglot.
            if target.kind != "var":
                facts.flag(ADMIN, "into_outfile")
            end = next((j for j in range(i + 1, len(toks)) if toks[j].up in _AFTER_INTO), len(toks))
            drop = toks[i:end]
            break
    if rank == WRITE:  # sqlglot reads `UPDATE LOW_PRIORITY t` as a table low_priority
        for tok in toks[1:4]:
            if tok.up not in _MODIFIERS:
                break
            drop.append(tok)
    text = _span(clean, toks, drop)
    if first.up in ("REPLACE", "DO"):
        text = ("INSERT" if first.up == "REPLACE" else "SELECT") + text[len(first.text):]
    tree = parse(text)
    if tree is None:
        facts.flag(ADMIN, "unparseable")
        return facts
    tree_facts(tree, facts)
    return facts


def _span(clean: str, toks: list[_Tok], drop: list[_Tok] = ()) -> str:
    """The statement's clean text, with the `drop` tokens blanked out."""
    text = list(clean[toks[0].start:toks[-1].end])
    for tok in drop:
        text[tok.start - toks[0].start:tok.end - toks[0].start] = " " * (tok.end - tok.start)
    return "".join(text)


def _explain(clean: str, toks: list[_Tok]) -> Facts:
    analyze = len(toks) > 1 and toks[1].up == "ANALYZE"
    inner = next((i for i, t in enumerate(toks[1:], 1) if t.up in _STRUCT and t.up != "DO"), None)
    if inner is None:  # DESCRIBE t [column], EXPLAIN FOR CONNECTION n
        facts = Facts(READ)
        name, _ = _name(toks, 1)
        if name and toks[1].up not in ("FOR", "FORMAT"):
            facts.table(name.lower())
        return facts
    facts = _analyse(clean, toks[inner:])
    if not analyze and facts.rank != ADMIN:  # not run, so only its admin parts count
        facts.rank = READ
        facts.attributes.discard("unbounded")
    return facts


def _set(clean: str, toks: list[_Tok]) -> Facts:
    second = toks[1].up if len(toks) > 1 else ""
    if second in ("PASSWORD", "ROLE", "DEFAULT", "RESOURCE"):
        return Facts(ADMIN if second == "RESOURCE" else DCL)
    facts, item, depth = Facts(TCL), [], 0
    for tok in [*toks[1:], None]:
        if tok is None or (tok.text == "," and depth == 0):
            facts.flag(*(_set_item_rank(item) if item else (TCL,)))
            item = []
            continue
        depth += (tok.text == "(") - (tok.text == ")")
        item.append(tok)
    if any(t.text == "(" for t in toks):  # a function call or a subquery in a value
        tree = parse(_span(clean, toks))
        if tree is None:
            facts.flag(ADMIN, "unparseable")
        else:
            tree_facts(tree, facts)
    return facts


def _set_item_rank(item: list[_Tok]) -> tuple:
    if item[0].up in ("GLOBAL", "PERSIST", "PERSIST_ONLY") or item[0].up.startswith(_GLOBAL_VARS):
        return (ADMIN,)
    if item[0].up in ("SESSION", "LOCAL") and len(item) > 1:
        item = item[1:]
    if item[0].kind == "var" and not item[0].text.startswith("@@"):
        return (TCL,)  # a user variable
    name = item[0].text.lower().split(".")[-1].lstrip("@")
    rest = [t for t in item[1:] if t.text not in ("=", ":")]
    if name == "character" and rest and rest[0].up == "SET":
        name, rest = "character set", rest[1:]
    value = _literal(rest[0]).lower() if rest and rest[0].kind in ("str", "word") else None
    if name in _ADMIN_VARIABLES:
        return (ADMIN,)
    if name in _CHARSET_VARIABLES:
        # "unsafe_charset": the relay refuses it whatever the policy says (it could not
        # read the session's later statements as the server does).
        return (TCL,) if value in _SAFE_CHARSETS else (ADMIN, "unsafe_charset")
    if name == "sql_mode" and (len(rest) != 1 or value is None or "backslash" in value
                               or "ansi" in value or value[:1].isdigit()):
        return (ADMIN,)  # these modes (also as a number: a bit mask) change the server's lexing
    return (TCL,)


def _ddl(clean: str, toks: list[_Tok]) -> Facts:
    if toks[0].up == "DROP" and len(toks) == 3 and toks[1].up == "PREPARE":
        return Facts(TCL)
    obj = next((t.up for t in toks[1:16] if t.up in _OBJECTS), None)
    if obj is None:
        return Facts(ADMIN, "unknown")
    facts = Facts(_OBJECTS[obj])
    if obj == "FUNCTION" and any(t.up == "SONAME" for t in toks):
        facts.flag(ADMIN, "udf_library")
    tree = parse(_span(clean, toks)) if obj in ("TABLE", "VIEW") else None
    if isinstance(tree, (exp.Create, exp.Drop, exp.Alter)):
        tree_facts(tree, facts)
        facts.attributes.discard("unbounded")
        return facts
    # No tree (stored programs, users, syntax sqlglot lacks): judge by the keywords.
    for i, tok in enumerate(toks[1:], 1):
        nxt = toks[i + 1].up if i + 1 < len(toks) else ""
        if tok.up in ("GRANT", "REVOKE") or (tok.up in ("CREATE", "DROP", "ALTER", "RENAME")
                                              and nxt in ("USER", "ROLE")):
            facts.flag(DCL)
        elif (tok.kind == "word" and tok.up in _ADMIN_WORDS) or tok.up.startswith(_GLOBAL_VARS):
            facts.flag(ADMIN, "dangerous_keyword")
    return _token_tables(toks, facts, ("VIEW", "ON") if obj in ("INDEX", "TRIGGER") else ("VIEW",))


def _prepare(toks: list[_Tok]) -> Facts:
    if len(toks) != 4 or toks[2].up != "FROM" or toks[3].kind != "str":
        return Facts(ADMIN, "unknown")  # FROM @var: the text is not here to judge
    facts = Facts(READ, "prepare")
    for statement in classify_mysql(_literal(toks[3]), _MODE.get()):
        facts.absorb(statement)
    return facts


def _token_tables(toks: list[_Tok], facts: Facts, extra: tuple[str, ...] = ()) -> Facts:
    """Tables named after TABLE/TABLES/INTO/HANDLER/TRUNCATE/`extra` (ON for GRANT),
    for statements sqlglot cannot parse; several may follow, comma-separated."""
    after = {"ON"} if toks[0].up in ("GRANT", "REVOKE") else \
        {"TABLE", "TABLES", "INTO", "HANDLER", "TRUNCATE", *extra}
    depth, listing, i = 0, False, 0
    while i < len(toks):
        depth += (toks[i].text == "(") - (toks[i].text == ")")
        if depth == 0 and (toks[i].up in after or (toks[i].text == "," and listing)):
            i += 1
            while i < len(toks) and toks[i].up in ("IF", "NOT", "EXISTS", "TABLE"):
                i += 1
            name, i = _name(toks, i)
            listing = bool(name)
            if name and name.upper() not in _OBJECTS and name.upper() not in _ADMIN_WORDS:
                facts.table(name.lower())
            continue
        i += 1
    return facts
