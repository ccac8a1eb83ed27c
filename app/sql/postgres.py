"""PostgreSQL statement classification with pglast, the server's own parser (pure).

A statement's kind is the most dangerous kind of anything inside it: the whole parse
tree is walked generically, so CTEs, subqueries, function arguments and nested
statements all count. The walk is here; what each statement node, function and
setting counts as is in pg_kinds.py. Kinds:

read   SELECT/VALUES/TABLE (FOR UPDATE too), SHOW, EXPLAIN without ANALYZE, DECLARE/
       FETCH/MOVE/CLOSE cursor, LISTEN/UNLISTEN, COPY ... TO STDOUT, PREPARE of a read
tcl    BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE/PREPARE TRANSACTION, SET TRANSACTION,
       SET/RESET of ordinary settings, SET CONSTRAINTS, DISCARD (not ALL), DEALLOCATE
write  INSERT/UPDATE/DELETE/MERGE, COPY FROM STDIN, LOCK, NOTIFY, REFRESH MATERIALIZED
       VIEW, nextval/setval/pg_notify/large-object writes, EXPLAIN ANALYZE of a write
ddl    CREATE/ALTER/DROP of schema objects, TRUNCATE, COMMENT, RENAME, CREATE TABLE AS,
       SELECT ... INTO (attribute "select_into")
dcl    GRANT/REVOKE, CREATE/ALTER/DROP ROLE|USER|GROUP, ALTER DEFAULT PRIVILEGES,
       REASSIGN/DROP OWNED, OWNER TO, row-level-security policies and switches,
       SECURITY LABEL, SET ROLE, SET SESSION AUTHORIZATION, set_config('role', ...),
       RESET ROLE, and DISCARD ALL, which resets the role (RESET ALL does not)
admin  ALTER SYSTEM, DO ("do_block"), CALL, LOAD, EXECUTE of a prepared statement,
       COPY ... PROGRAM ("copy_program"), COPY to/from a server file ("copy_file"),
       VACUUM/ANALYZE/CLUSTER/REINDEX/CHECKPOINT, extensions, languages, functions in
       untrusted languages (C, plpython3u, ...), access methods, event triggers, FDWs,
       foreign servers, user mappings, publications, subscriptions, tablespaces;
       admin functions (pg_terminate_backend, pg_read_file, dblink*, lo_import, ...);
       settings that are superuser-only or would make this parser read the text
       differently from the server (standard_conforming_strings, a client_encoding
       such as SJIS or BIG5: attribute "parser_divergence", which the relay refuses
       outright; see pg_session.py); set_config() with a non-literal name; anything
       unparseable ("unparseable") or of an unknown node type ("unknown").

Choices:
- PREPARE is classified by its inner statement. EXECUTE cannot be known from its own
  text, so it is admin with "execute_prepared" and "unknown" (fail closed).
- EXPLAIN without ANALYZE does not run its statement, so writes inside it do not
  count; calls to admin functions still do, because the planner may evaluate
  functions while folding constants.
- Bodies of CREATE FUNCTION (BEGIN ATOMIC or a LANGUAGE sql string) are classified
  too: the create is at least ddl and rises to dcl/admin when the body would.
- A name that a WITH around it defines is a CTE, not a table; the target of INSERT/
  UPDATE/DELETE/MERGE and SELECT INTO always is a table (PostgreSQL resolves it so).
- Text containing NUL is unparseable: pglast reads a C string and would stop there.
- What a user-defined function or a trigger does is not in the text: `SELECT f()` is
  read. Who may create functions (ddl) and call them is for policy to decide.
- No numeric literal lowers a kind (EXPLAIN (ANALYZE 0) counts as ANALYZE), so callers
  may share one answer between texts that differ only in numbers.
"""
from __future__ import annotations

import functools

from pglast import ast, parser
from pglast.enums import DiscardMode, ObjectType, VariableSetKind

from app.types import KINDS

from .pg_kinds import ADMIN_DROPS, DCL_TABLE_COMMANDS, STATEMENT_RANK, flag_setting, function_rank
from .statement import ADMIN, DCL, DDL, TCL, WRITE, Facts, Statement, classifier, failed

_RELATION_OBJECTS = frozenset({ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW,
                               ObjectType.OBJECT_MATVIEW, ObjectType.OBJECT_FOREIGN_TABLE,
                               ObjectType.OBJECT_SEQUENCE, ObjectType.OBJECT_INDEX})
_WRITE_NODES = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
_BOUNDING_NODES = frozenset({"ColumnRef", "SubLink", "FuncCall", "CurrentOfExpr"})
_LEAVES = frozenset({ast.String, ast.Integer, ast.Float, ast.Boolean, ast.BitString, ast.A_Star})


def classify_postgres(sql: str) -> list[Statement]:
    """Split PostgreSQL text into statements and classify each one. Never raises."""
    return _classify_safely(sql)


def _classify(sql: str) -> list[Statement]:
    if "\x00" in sql:  # pglast reads a C string and would stop there
        return [failed(sql, "unparseable")]
    try:
        raws = parser.parse_sql(sql)
    except (parser.ParseError, UnicodeError):
        return [failed(sql, "unparseable")]
    out = []
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        out.append(_statement(sql[start:end].strip(), raw.stmt))
    return out


_classify_safely = classifier(_classify)


def _statement(text: str, node: ast.Node) -> Statement:
    facts = Facts()
    _walk(node, facts)
    return facts.statement(text, parser.fingerprint(text))


@functools.cache
def _child_slots(cls: type) -> tuple[str, ...]:
    slots = getattr(cls, "__slots__", ())
    if not isinstance(slots, dict):
        return ()
    return tuple(name for name, info in slots.items() if _holds_nodes(info.py_type))


def _holds_nodes(py_type: object) -> bool:
    types = py_type if isinstance(py_type, tuple) else (py_type,)
    return any(t in (list, tuple) or (isinstance(t, type) and issubclass(t, ast.Node))
               for t in types)


def _children(node: object):
    if isinstance(node, tuple):
        yield from node
        return
    for name in _child_slots(type(node)):
        value = getattr(node, name, None)
        if value is not None:
            yield value


def _walk(root: ast.Node, facts: Facts) -> None:
    # inert: inside an EXPLAIN that will not run it; statements there do not count.
    # ctes: the CTE names in scope, which unqualified names in FROM refer to.
    stack: list[tuple[object, bool, frozenset[str]]] = [(root, False, frozenset())]
    while stack:
        node, inert, ctes = stack.pop()
        if type(node) in _LEAVES or not isinstance(node, (ast.Node, tuple)):
            continue
        with_clause = None
        if not isinstance(node, tuple):
            name = type(node).__name__
            if name == "RangeVar":
                if node.schemaname or (node.relname or "").lower() not in ctes:
                    _table(node, facts)
                continue
            with_clause = getattr(node, "withClause", None)
            if with_clause is not None:
                # A CTE body sees the CTEs before it (all, if RECURSIVE); a name not yet
                # defined there is the real table: WITH s AS (SELECT * FROM s) reads s.
                names = [(c.ctename or "").lower() for c in with_clause.ctes or ()]
                for i, cte in enumerate(with_clause.ctes or ()):
                    visible = names if with_clause.recursive else names[:i]
                    stack.append((cte, inert, ctes | frozenset(visible)))
                ctes = ctes | frozenset(names)
            target = getattr(node, "relation", None) if name in _WRITE_NODES else None
            if isinstance(target, ast.RangeVar):
                _table(target, facts)  # never a CTE, even when one has its name
            if name == "FuncCall":
                rank = _function_rank(node, facts)
                if not inert or rank == ADMIN:
                    facts.flag(rank)
            elif name == "ExplainStmt":
                inert = inert or not _explain_analyze(node)
            elif name == "CommonTableExpr":
                if type(node.ctequery).__name__ in _WRITE_NODES:
                    facts.attributes.add("writing_cte")
            elif name == "AlterTableCmd":
                if node.subtype in DCL_TABLE_COMMANDS and not inert:
                    facts.flag(DCL)
            elif name.endswith("Stmt") and not inert:
                _statement_node(name, node, facts)
        stack.extend((child, inert, ctes) for child in _children(node)
                     if child is not with_clause)


def _statement_node(name: str, node: ast.Node, facts: Facts) -> None:
    rank = STATEMENT_RANK.get(name)
    if rank is not None:
        facts.flag(rank)
        return
    handler = _HANDLERS.get(name)
    if handler is None:
        facts.flag(ADMIN, "unknown")
    else:
        handler(node, facts)


def _select(node: ast.SelectStmt, facts: Facts) -> None:
    if node.intoClause is not None:
        facts.flag(DDL, "select_into")
        _table(node.intoClause.rel, facts)


def _update_delete(node: ast.Node, facts: Facts) -> None:
    facts.flag(WRITE)
    if _constant(node.whereClause):
        facts.attributes.add("unbounded")


def _constant(where: object) -> bool:
    """True when a WHERE cannot depend on the row: absent, or made of constants only."""
    if where is None:
        return True
    stack = [where]
    while stack:
        node = stack.pop()
        if type(node).__name__ in _BOUNDING_NODES:
            return False
        stack.extend(c for c in _children(node) if isinstance(c, (ast.Node, tuple)))
    return True


def _copy(node: ast.CopyStmt, facts: Facts) -> None:
    if node.is_program:
        facts.flag(ADMIN, "copy_program")
    elif node.filename is not None:
        facts.flag(ADMIN, "copy_file")
    elif node.is_from:
        facts.flag(WRITE, "copy_from_stdin")
    else:
        facts.attributes.add("copy_to_stdout")


def _variable_set(node: ast.VariableSetStmt, facts: Facts) -> None:
    if node.kind == VariableSetKind.VAR_RESET_ALL:
        facts.flag(TCL, "reparse")  # leaves the role alone; may change how text is read
    elif node.kind == VariableSetKind.VAR_SET_MULTI:
        facts.flag(TCL)  # SET TRANSACTION
    else:
        value = None  # RESET, DEFAULT, FROM CURRENT
        if node.kind == VariableSetKind.VAR_SET_VALUE:
            args = node.args or ()
            value = (_string_const(args[0]) or "") if len(args) == 1 else ""
        flag_setting(node.name or "", value, facts)


def _function_rank(node: ast.FuncCall, facts: Facts) -> int:
    parts = [getattr(p, "sval", "") or "" for p in node.funcname or ()]
    facts.function(".".join(parts).lower(), node.location or 0)
    bare = parts[-1].lower() if parts else ""
    if bare == "set_config":
        args = node.args or ()
        setting = _string_const(args[0]) if args else None
        if setting is None:  # could be client_encoding or standard_conforming_strings
            facts.flag(ADMIN, "parser_divergence")
            return ADMIN
        value = _string_const(args[1]) if len(args) > 1 else None
        twin = Facts()
        flag_setting(setting, value or "", twin)  # never a reset: NULL and expressions are unknown
        facts.attributes.update(twin.attributes)
        return twin.rank
    return function_rank(bare)


def _explain_analyze(node: ast.ExplainStmt) -> bool:
    """Whether EXPLAIN runs its statement. PostgreSQL takes the last of repeated options
    (`ANALYZE false, ANALYZE true` runs it), so the last one decides here too."""
    analyze = False
    for option in node.options or ():
        if getattr(option, "defname", None) == "analyze":
            # Any number counts as on, even 0: a numeric literal must never lower a
            # kind, so that texts differing only in numbers may share one answer. Only
            # the spellings defGetBoolean reads as false turn it off.
            arg = option.arg
            if isinstance(arg, ast.Boolean):
                analyze = bool(arg.boolval)
            else:
                value = getattr(arg, "sval", None)
                analyze = not (isinstance(value, str) and value.lower() in ("false", "off"))
    return analyze


def _create_function(node: ast.CreateFunctionStmt, facts: Facts) -> None:
    facts.flag(DDL)
    options = {o.defname: o.arg for o in node.options or () if isinstance(o, ast.DefElem)}
    language = (getattr(options.get("language"), "sval", "") or "sql").lower()
    if language in ("c", "internal") or (language.startswith("pl") and language.endswith("u")):
        facts.flag(ADMIN, "untrusted_language")
    body = options.get("as")
    if language == "sql" and isinstance(body, tuple) and body and isinstance(body[0], ast.String):
        for statement in classify_postgres(body[0].sval):
            facts.flag(KINDS.index(statement.kind))


def _drop(node: ast.DropStmt, facts: Facts) -> None:
    kind = node.removeType
    facts.flag(ADMIN if kind in ADMIN_DROPS else DCL if kind == ObjectType.OBJECT_POLICY else DDL)
    if kind in _RELATION_OBJECTS:
        for obj in node.objects or ():
            if isinstance(obj, tuple):
                facts.table(_qualified(*(getattr(p, "sval", None) for p in obj)))


def _rename(node: ast.RenameStmt, facts: Facts) -> None:
    facts.flag(DCL if node.renameType == ObjectType.OBJECT_ROLE else DDL)


def _discard(node: ast.DiscardStmt, facts: Facts) -> None:
    if node.target == DiscardMode.DISCARD_ALL:
        facts.flag(DCL, "reparse")  # RESET ALL inside
    else:
        facts.flag(TCL)


def _create_table_as(node: ast.CreateTableAsStmt, facts: Facts) -> None:
    facts.flag(DDL, *(("select_into",) if node.is_select_into else ()))


_HANDLERS = {
    "SelectStmt": _select,
    "UpdateStmt": _update_delete,
    "DeleteStmt": _update_delete,
    "CopyStmt": _copy,
    "VariableSetStmt": _variable_set,
    "CreateFunctionStmt": _create_function,
    "DropStmt": _drop,
    "RenameStmt": _rename,
    "DiscardStmt": _discard,
    "CreateTableAsStmt": _create_table_as,
    # Their bodies are not in the text and may call set_config('client_encoding', ...):
    # "reparse" makes the relay wait for the target's word on the settings after them.
    "DoStmt": lambda node, facts: facts.flag(ADMIN, "do_block", "reparse"),
    "CallStmt": lambda node, facts: facts.flag(ADMIN, "reparse"),
    "ExecuteStmt": lambda node, facts: facts.flag(ADMIN, "execute_prepared", "unknown"),
}


def _string_const(node: object) -> str | None:
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return node.val.sval
    return None


def _table(node: ast.RangeVar, facts: Facts) -> None:
    facts.table(_qualified(node.catalogname, node.schemaname, node.relname), node.location or 0)


def _qualified(*parts: str | None) -> str:
    return ".".join(p for p in parts if p).lower()
