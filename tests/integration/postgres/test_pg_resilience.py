"""The relay when the IdP is down: a session never outlives its JWT, and a login that
cannot be checked says which of the IdP and the store is to blame."""
from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from sqlalchemy import select

from app.db import session_scope
from app.models import Connection, Grant, ServiceAccount
from app.versions import bump_version
from tests.oidc_issuer import LocalIssuer, decode_unverified

from .conftest import dsn, events, start_relay, stop_relay, wait_for

LEEWAY = 1


@pytest.fixture
def idp():
    with LocalIssuer() as issuer:
        yield issuer


def jwt_account(issuer: str) -> str:
    name = f"jwt-{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        sa = ServiceAccount(name=name, oidc_issuer=issuer, oidc_subject=name)
        s.add(sa)
        s.flush()
        app = s.scalar(select(Connection).where(Connection.name == "app"))
        s.add(Grant(service_account_id=sa.id, connection_id=app.id, created_by="test"))
        bump_version(s)
    return name


@pytest.fixture
def fragile_relay(world):
    """A relay whose cached keys are useless one second after the IdP goes away, so only
    the session's own knowledge of `exp` can end it."""
    relay = start_relay(world, AIRLOCK_OIDC_LEEWAY_SECONDS=str(LEEWAY), AIRLOCK_JWKS_TTL_SECONDS="1",
                        AIRLOCK_JWKS_MAX_AGE_SECONDS="1")
    yield relay
    stop_relay(relay)


def test_an_open_session_ends_at_exp_while_the_idp_is_down(fragile_relay, idp):
    name = jwt_account(idp.issuer)
    token = idp.mint({"sub": name}, expires_in=5)
    exp = decode_unverified(token)[1]["exp"]
    last_ok = last_ok_sent = error = None
    sql = f"SELECT 1 AS {name.replace('-', '_')}"
    ran = 0
    with psycopg.connect(dsn(fragile_relay, token, user=name, application_name=name), autocommit=True) as conn:
        assert conn.execute(sql).fetchone() == (1,)
        ran += 1
        idp.stop()
        while time.time() < exp + LEEWAY + 10:
            sent = time.time()
            try:
                conn.execute(sql).fetchone()
                ran += 1
                last_ok, last_ok_sent = time.time(), sent
            except psycopg.Error as exc:
                error = exc
                break
            time.sleep(0.1)
    assert error is not None, "the session kept running statements long after its token expired"
    assert "expired" in str(error), str(error)
    # Valid until exp + leeway; the token is looked at again at most every second. The
    # relay checked the last statement that ran after it was sent, so its send time bounds
    # the check from below whatever the machine's load delays; its answer time shows the
    # session was not ended early.
    assert last_ok is not None and last_ok > exp - 1, (last_ok - exp)
    assert last_ok_sent < exp + LEEWAY + 1.5, (last_ok_sent - exp)
    # Nothing that ran is missing from the recording.
    recorded = lambda: [d for _, kind, d in events(lambda r: r.run_id == name)  # noqa: E731
                        if kind == "output" and sql in d.get("sql", "")]
    assert len(wait_for(lambda: len(recorded()) >= ran and recorded()) or []) == ran


def test_a_login_the_idp_cannot_check_names_the_idp_not_the_store(fragile_relay, idp):
    name = jwt_account(idp.issuer)
    token = idp.mint({"sub": name})
    idp.stop()  # and nobody ever fetched its keys
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn(fragile_relay, token, user=name)).close()
    message = str(info.value)
    assert "identity provider unreachable" in message, message
    assert "store" not in message, message
