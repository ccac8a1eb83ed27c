from datetime import timedelta

import pytest
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


def test_user_by_email_ignores_case_and_spaces_and_reads_no_wildcards(store):
    from app.models import User, user_by_email
    from app.changes import ChangeError, create_local_user

    with session_scope() as s:
        s.add(User(email="Ann.Lee@Example.com", roles=["approver"], source="portal"))
        s.add(User(email="axb@example.com", roles=[], source="portal"))
    with session_scope() as s:
        assert user_by_email(s, "  ann.lee@EXAMPLE.com ").email == "Ann.Lee@Example.com"
        assert user_by_email(s, "ann%@example.com") is None  # "%" and "_" are characters, not patterns
        assert user_by_email(s, "") is None and user_by_email(s, None) is None
        # "a_b" is a new address, not the existing "axb" (a LIKE pattern would say it exists)
        create_local_user(s, "admin@localhost", "a_b@example.com", "A B", ["approver"], [])
        with pytest.raises(ChangeError, match="already exists"):
            create_local_user(s, "admin@localhost", "ANN.LEE@example.com", "Ann", ["approver"], [])
    with session_scope() as s:
        assert user_by_email(s, "A_B@example.com").source == "portal"
