from datetime import timedelta

from sqlalchemy import select

from app.db import session_scope
from app.models import Connection, Grant, ServiceAccount, Group, utcnow


def test_store_round_trips_a_grant_with_aware_times(store):
    with session_scope() as s:
        sa = ServiceAccount(name="etl-agent", groups=[Group(name="etl")])
        conn = Connection(name="orders-db", type="postgres", config={"address": "127.0.0.1:5432"})
        s.add(Grant(service_account=sa, connection=conn, expires_at=utcnow() + timedelta(hours=1)))
    with session_scope() as s:
        grant = s.scalars(select(Grant)).one()
        assert grant.service_account.group_names == {"etl"}
        assert grant.expires_at.tzinfo is not None
        assert grant.active_at(utcnow())
        assert not grant.active_at(utcnow() + timedelta(hours=2))
