"""Store version counters that hot-path caches key on (DESIGN §2).

Anything that changes who may do what (rules, grants, tokens) bumps the "policy"
counter in the same transaction as the change, so a cache keyed by the counter can
never serve an answer older than the change once the transaction commits.
"""
from __future__ import annotations

from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import StoreVersion, utcnow


VERSION_CHANNEL = "version"  # the bus channel that announces every bump as it commits


def bump_version(session: Session, name: str = "policy") -> int:
    """Increment counter `name` (creating it at 1) and return the new value; gates hear
    of it on the bus at commit, so open sessions see the change at once."""
    from app import bus  # bus -> models; versions is imported by models' users early

    bus.publish(session, VERSION_CHANNEL, name)
    new = _increment(session, name)
    if new is None:
        # ON CONFLICT DO NOTHING: a concurrent first bump may create the row too.
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        session.execute(
            insert(StoreVersion)
            .values(name=name, version=0, updated_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        new = _increment(session, name)
    if new is None:  # pragma: no cover - the row exists at this point
        raise RuntimeError(f"could not bump store version {name!r}")
    return new


def _increment(session: Session, name: str) -> int | None:
    # A single UPDATE ... RETURNING is atomic on both backends: two processes
    # bumping at once get distinct values instead of both writing n+1.
    return session.execute(
        update(StoreVersion)
        .where(StoreVersion.name == name)
        .values(version=StoreVersion.version + 1, updated_at=utcnow())
        .returning(StoreVersion.version)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()


def current_version(session: Session, name: str = "policy") -> int:
    """The counter's value; 0 when it was never bumped."""
    value = session.scalar(select(StoreVersion.version).where(StoreVersion.name == name))
    return value or 0


def version_reader(name: str = "policy") -> Callable[[], int]:
    """A zero-argument callable reading the counter in its own short transaction.

    Costs one primary-key read per call; processes with a bus can supply a cheaper
    source that is refreshed by notifications instead.
    """
    from app.db import session_scope

    def read() -> int:
        with session_scope() as session:
            return current_version(session, name)

    return read
