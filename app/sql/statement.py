"""The `Statement` value and what both dialects share (pure, no I/O)."""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Callable

from app.types import KINDS, MOST_DANGEROUS_KIND

# A statement's rank: its kind's index in KINDS (Facts.flag keeps the highest).
READ, TCL, WRITE, DDL, DCL, ADMIN = range(len(KINDS))

# Texts longer than this are classified but not cached: a bulk INSERT of megabytes
# would otherwise pin that memory for the life of the process.
CACHE_TEXT_LIMIT = 8192
CACHE_SIZE = 4096

# Facts about a statement's neighbours, not the statement: kept out of the fingerprint
# so that one shape has one fingerprint however it is sent.
_CONTEXT_ATTRIBUTES = frozenset({"multi_statement", "versioned_comment"})
_LAST = 1 << 62
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Statement:
    """One classified SQL statement.

    `kind` is one of `app.types.KINDS`; `tables` and `functions` are lowercase and
    qualified as written; `attributes` are facts such as "unbounded" or "copy_program";
    `fingerprint` is equal for statements of the same shape with different literals.
    """

    text: str
    kind: str
    tables: tuple[str, ...]
    functions: tuple[str, ...]
    attributes: frozenset[str]
    fingerprint: str


class Facts:
    """What a dialect learns about one statement while it reads it."""

    __slots__ = ("rank", "tables", "functions", "attributes")

    def __init__(self, rank: int = 0, *attributes: str) -> None:
        self.rank = rank  # index into KINDS
        self.attributes = set(attributes)
        self.tables: dict[str, int] = {}  # name -> position, to list them in source order
        self.functions: dict[str, int] = {}

    def flag(self, rank: int, *attributes: str) -> None:
        self.rank = max(self.rank, rank)
        self.attributes.update(attributes)

    def table(self, name: str, position: int | None = None) -> None:
        _note(self.tables, name, position)

    def function(self, name: str, position: int | None = None) -> None:
        _note(self.functions, name, position)

    def absorb(self, statement: Statement) -> None:
        """Take in a statement found inside this one (e.g. a prepared text)."""
        self.flag(KINDS.index(statement.kind), *(statement.attributes - _CONTEXT_ATTRIBUTES))
        for table in statement.tables:
            self.table(table)
        for function in statement.functions:
            self.function(function)

    def copy(self) -> Facts:
        twin = Facts(self.rank, *self.attributes)
        twin.tables, twin.functions = dict(self.tables), dict(self.functions)
        return twin

    def statement(self, text: str, shape: str) -> Statement:
        kind, attrs = KINDS[self.rank], frozenset(self.attributes)
        tables = tuple(sorted(self.tables, key=self.tables.__getitem__))
        functions = tuple(sorted(self.functions, key=self.functions.__getitem__))
        return Statement(text, kind, tables, functions, attrs,
                         fingerprint(shape, kind, tables, functions, attrs))


def _note(seen: dict[str, int], name: str, position: int | None) -> None:
    # Without a known position a name goes after everything seen so far.
    if name not in seen or (position is not None and position < seen[name]):
        seen[name] = _LAST + len(seen) if position is None else position


def fingerprint(shape: str, kind: str, tables: tuple[str, ...], functions: tuple[str, ...],
                attributes: frozenset[str]) -> str:
    """A SHA-256 digest of a statement's literal-free shape and of its facts.

    pglast's fingerprint is a 64-bit XXH3 that an attacker can collide on purpose; an
    approval keyed on it ("this fingerprint for N minutes") could then admit another
    statement. Hashing the shape together with kind, targets and attributes keeps equal
    shapes equal and makes a forged match useless.
    """
    facts = "\x1f".join((shape, kind, ",".join(tables), ",".join(functions),
                         ",".join(sorted(attributes - _CONTEXT_ATTRIBUTES))))
    return hashlib.sha256(facts.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def failed(text: str, *attributes: str) -> Statement:
    """The fail-closed answer: the whole text as one statement of the worst kind."""
    facts = Facts(KINDS.index(MOST_DANGEROUS_KIND), *attributes)
    return facts.statement(text.strip(), _SPACE.sub(" ", text.strip().lower()))


def with_attributes(statement: Statement, *attributes: str) -> Statement:
    """The same statement with more context attributes (the fingerprint stays)."""
    return Statement(statement.text, statement.kind, statement.tables, statement.functions,
                     statement.attributes | frozenset(attributes), statement.fingerprint)


def classifier(split: Callable[[str], list[Statement]]) -> Callable[[str], list[Statement]]:
    """Wrap a dialect's splitter: cache by text, mark multi-statement text, never raise."""

    def classify(sql: str) -> tuple[Statement, ...]:
        statements = split(sql)
        if len(statements) > 1:
            statements = [with_attributes(s, "multi_statement") for s in statements]
        return tuple(statements)

    cached = functools.lru_cache(maxsize=CACHE_SIZE)(classify)

    def safe(sql: str) -> list[Statement]:
        try:
            return list(cached(sql) if len(sql) <= CACHE_TEXT_LIMIT else classify(sql))
        except Exception:  # a classifier bug must deny, not crash the relay
            return [failed(sql if isinstance(sql, str) else "", "unparseable")]

    return safe
