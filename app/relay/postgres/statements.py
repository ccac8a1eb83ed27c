"""The gate's Operations for PostgreSQL statement text (pure).

Classification itself, with its literal-free cache, lives in `app.sql.cache`.
"""
from __future__ import annotations

from app.sql import Statement, classify_postgres_cached
from app.types import Operation

classify = classify_postgres_cached  # the name this module used to define


def operations(text: str, connection: str) -> list[Operation]:
    """The gate's Operations for every statement of `text` on `connection`."""
    return [Operation(protocol="postgres", connection=connection, kind=st.kind, text=st.text,
                      targets=st.tables + st.functions, attributes=st.attributes, fingerprint=st.fingerprint)
            for st in classify_postgres_cached(text)]


__all__ = ["Statement", "classify", "operations"]
