"""Pure SQL statement classification: pglast for PostgreSQL, sqlglot for MySQL."""
from .cache import classify_postgres_cached, numberless
from .mysql import classify_mysql
from .postgres import classify_postgres
from .statement import Statement

__all__ = ["Statement", "classify_mysql", "classify_postgres", "classify_postgres_cached", "numberless"]
