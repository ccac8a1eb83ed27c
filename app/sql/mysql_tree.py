"""What sqlglot (dialect "mysql") reads inside one MySQL statement (pure): its tables,
the functions it calls, the writes nested in it and whether they are bounded.

The classifier (mysql.py) has already found the statement with its own lexer, which
follows the server, and judged what sqlglot cannot: it hands over only the clean text
of a query, a DML, a SET with a call or subquery, or a table or view DDL, with the
clauses sqlglot misreads blanked out. A text sqlglot cannot parse, or turns into
something else (an `exp.Command`), comes back as None, and the caller refuses it.
"""
from __future__ import annotations

import sqlglot
from sqlglot import exp

from .statement import ADMIN, WRITE, Facts

# Calls that read the server's files or run programs: admin wherever they appear.
_ADMIN_FUNCTIONS = frozenset("load_file sys_exec sys_eval sys_get sys_set".split())
_DIALECT = sqlglot.Dialect.get_or_raise("mysql")


def parse(text: str) -> exp.Expression | None:
    """The one statement sqlglot reads in `text`, or None."""
    try:
        parser = _DIALECT.parser()
        parser._warn_unsupported = lambda: None  # it would log the SQL text at WARNING
        trees = parser.parse(_DIALECT.tokenize(text), text)
    except Exception:
        return None
    if len(trees) != 1 or trees[0] is None or isinstance(trees[0], exp.Command):
        return None
    return trees[0]


def tree_facts(tree: exp.Expression, facts: Facts) -> None:
    """Add the tree's tables (not its CTEs), calls and nested writes to `facts`."""
    for table in tree.find_all(exp.Table):
        name = (table.name or "").lower()
        if name and not name.startswith("@") and not _cte_reference(table, name):
            facts.table(".".join(p for p in (table.catalog, table.db, name) if p).lower(),
                        getattr(table.this, "meta", {}).get("start"))
    for func in tree.find_all(exp.Func):
        name = (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()
        facts.function(name)
        if name in _ADMIN_FUNCTIONS:
            facts.flag(ADMIN)
    for node in tree.find_all(exp.Insert, exp.Update, exp.Delete, exp.Merge):
        facts.flag(WRITE)
        where = node.args.get("where")
        # A WHERE that cannot depend on the row (absent, or constants only) hits them all.
        if isinstance(node, (exp.Update, exp.Delete)) and (
                where is None or where.find(exp.Column, exp.Subquery, exp.Select, exp.Func) is None):
            facts.attributes.add("unbounded")


def _cte_reference(table: exp.Table, name: str) -> bool:
    """Whether an unqualified name is a CTE of a WITH around it. A DML target never is:
    `WITH t AS (...) INSERT INTO t` writes the real table t."""
    if table.db:
        return False
    child, node = table, table.parent
    while node is not None:
        if isinstance(node, (exp.Insert, exp.Update, exp.Delete)) and (
                child is node.this or any(child is t for t in node.args.get("tables") or ())):
            return False
        if isinstance(node, exp.With):  # a CTE body sees the CTEs before it, unless RECURSIVE
            at = next((i for i, c in enumerate(node.expressions) if c is child), 0)
            names = [c.alias.lower() for c in node.expressions]
            if name in (names if node.args.get("recursive") else names[:at]):
                return True
        else:
            with_ = node.args.get("with_") or node.args.get("with")
            if with_ is not None and with_ is not child and any(
                    c.alias.lower() == name for c in with_.expressions):
                return True
        child, node = node, node.parent
    return name == "dual"
