"""The `Statement` value and the helpers both dialects share (pure, no I/O)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable

from app.types import KINDS, MOST_DANGEROUS_KIND, kind_rank

# Texts longer than this are classified but not cached: a bulk INSERT of megabytes
# would otherwise pin that memory for the life of the process.
CACHE_TEXT_LIMIT = 8192
CACHE_SIZE = 4096

# Facts that describe the statement's neighbours rather than the statement itself; they
# stay out of the fingerprint so one shape has one fingerprint wherever it is sent.
_CONTEXT_ATTRIBUTES = frozenset({"multi_statement"})

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


def worst(kinds: Iterable[str]) -> str:
    """The most dangerous of `kinds` ("read" for none)."""
    best = 0
    for kind in kinds:
        best = max(best, kind_rank(kind))
    return KINDS[best]


def fingerprint(shape: str, kind: str, tables: Iterable[str], functions: Iterable[str],
                attributes: Iterable[str]) -> str:
    """A cryptographic digest of a statement's literal-free shape and of its facts.

    pglast's fingerprint is a 64-bit XXH3, which an attacker can collide on purpose; an
    approval keyed on it ("this fingerprint for N minutes") could then admit a different
    statement. Hashing the shape together with the kind, targets and attributes with
    SHA-256 keeps shapes stable and makes a forged match useless.
    """
    facts = "\x1f".join((
        shape, kind, ",".join(tables), ",".join(functions),
        ",".join(sorted(set(attributes) - _CONTEXT_ATTRIBUTES)),
    ))
    return hashlib.sha256(facts.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def text_shape(text: str) -> str:
    """Fallback shape for text no parser understood: case and spacing folded."""
    return _SPACE.sub(" ", text.strip().lower())


def failed(text: str, *attributes: str) -> Statement:
    """The fail-closed answer: the whole text as one statement of the worst kind."""
    attrs = frozenset(attributes)
    kind = MOST_DANGEROUS_KIND
    return Statement(text.strip(), kind, (), (), attrs,
                     fingerprint(text_shape(text), kind, (), (), attrs))


def with_attributes(statement: Statement, *attributes: str) -> Statement:
    """The same statement with more context attributes (the fingerprint stays)."""
    return Statement(statement.text, statement.kind, statement.tables, statement.functions,
                     statement.attributes | frozenset(attributes), statement.fingerprint)


def with_multi(statements: list[Statement]) -> list[Statement]:
    """Mark every statement when the text held more than one."""
    if len(statements) < 2:
        return statements
    return [with_attributes(s, "multi_statement") for s in statements]
