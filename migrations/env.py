"""Alembic environment: the URL comes from AIRLOCK_DATABASE_URL (or the SQLite default)."""
from alembic import context
from sqlalchemy import pool

from app.config import settings
from app.db import engine_for
from app.models import Base

config = context.config
target_metadata = Base.metadata


def url() -> str:
    return config.get_main_option("sqlalchemy.url") or settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_for(url())
    with connectable.connect() as connection:
        # A migration may rewrite a big table: no store deadline, no statement timeout.
        connection = connection.execution_options(store_deadline=False)
        pg = connection.dialect.name == "postgresql"
        if pg:
            connection.exec_driver_sql("SET statement_timeout = 0")
            connection.exec_driver_sql("SET lock_timeout = 0")
        # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds tables.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        if pg:  # back to the connection's own limits before it returns to the pool
            connection.exec_driver_sql("RESET statement_timeout")
            connection.exec_driver_sql("RESET lock_timeout")
            connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
