"""Logging in: the token as a password over TLS, refusals, and the relay's own login to targets."""
from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import errors

from app.db import session_scope
from app.identity import revoke_token

from .conftest import dsn, psql
from .rawclient import RawClient, error_fields


def test_psql_logs_in_with_a_token_over_tls(relay, agent, world):
    r = psql(relay, agent, "-A", "-t", "-c", "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert r.returncode == 0, r.stderr
    # The target sees the vault's role, never the service account.
    assert r.stdout.strip().split("|")[0] == world.target.roles["scram"]


@pytest.mark.parametrize("connection, role", [("app", "scram"), ("app_md5", "md5"), ("app_clear", "clear")])
def test_target_login_with_scram_md5_and_cleartext(relay, agent, world, connection, role):
    with psycopg.connect(dsn(relay, agent, connection)) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == world.target.roles[role]
    with world.target.admin("postgres") as admin:
        method = admin.execute(
            "SELECT auth_method FROM pg_hba_file_rules WHERE %s = ANY(user_name)", (world.target.roles[role],)
        ).fetchone()[0]
    assert method == {"scram": "scram-sha-256", "md5": "md5", "clear": "password"}[role]


def test_wrong_token_is_28P01(relay):
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(dsn(relay, "alk_" + "x" * 43))
    assert "password authentication failed" in str(exc.value)
    r = psql(relay, "not-a-token", "-c", "SELECT 1")
    assert r.returncode != 0 and "password authentication failed" in r.stderr


def test_token_of_another_service_account_is_refused(relay, world):
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(dsn(relay, world.tokens["stranger"], user="agent"))
    assert "password authentication failed" in str(exc.value)


def test_sqlstate_of_a_failed_login(relay):
    c = RawClient(relay.host, relay.port)
    c.startup("agent", "app")
    kind, _ = c.read()
    c.send(b"p" + (4 + 6).to_bytes(4, "big") + b"wrong\0")
    kind, body = c.read()
    assert kind == b"E" and error_fields(body)["C"] == "28P01"
    c.close()


def test_plaintext_is_refused_before_any_password(relay, agent):
    c = RawClient(relay.host, relay.port, tls=False)
    c.startup("agent", "app")
    kind, body = c.read()
    fields = error_fields(body)
    assert kind == b"E" and fields["C"] == "28000" and "TLS is required" in fields["M"]
    r = psql(relay, agent, "-c", "SELECT 1", sslmode="disable")
    assert r.returncode != 0 and "TLS is required" in r.stderr


def test_direct_tls_without_sslrequest(relay, agent):
    c = RawClient(relay.host, relay.port, direct_tls=True)
    messages = c.login("agent", "app", agent)
    assert (b"R", b"\0\0\0\0") in messages
    rows = [body for kind, body in c.query("SELECT 41 + 1") if kind == b"D"]
    assert rows and rows[0].endswith(b"42")
    c.close()


def test_unknown_connection_is_3D000(relay, agent):
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(dsn(relay, agent, connection="nope"))
    assert 'connection "nope" does not exist' in str(exc.value)


def test_no_grant_denies_every_statement(relay, world):
    with psycopg.connect(dsn(relay, world.tokens["stranger"], user="stranger"), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute("SELECT 1")
    assert "no-grant" in str(exc.value)


def test_startup_settings_pass_the_gate(relay, agent):
    # options=-c ... are settings like SET: a role switch is dcl, denied by policy.
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(dsn(relay, agent, options="'-c role=postgres'"))
    assert "startup setting role was refused" in str(exc.value)
    with psycopg.connect(dsn(relay, agent, options="'-c search_path=public'")) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "public"


def test_revoked_token_stops_working_in_an_open_session(relay, world):
    with psycopg.connect(dsn(relay, world.tokens["revokee"], user="revokee"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with session_scope() as s:
            revoke_token(s, world.token_ids["revokee"], by="test")
        time.sleep(1.2)  # the relay re-checks the token at most a second apart
        with pytest.raises(psycopg.OperationalError) as exc:
            conn.execute("SELECT 1")
    assert "no longer valid" in str(exc.value)


def test_replication_connections_are_refused(relay, agent):
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(dsn(relay, agent, replication="database"))
    assert "replication connections are not relayed" in str(exc.value)


def test_verify_full_with_airlocks_ca(relay, world, agent):
    from pathlib import Path

    from app.ca import ensure_ca

    from .conftest import start_relay, stop_relay

    root = str(ensure_ca(Path(world.env["AIRLOCK_HOME"]) / "ca"))
    # The session's relay started before there was a CA: its certificate is self-signed.
    with pytest.raises(psycopg.OperationalError) as exc:
        psycopg.connect(dsn(relay, agent, sslmode="verify-full", sslrootcert=root))
    assert "certificate verify failed" in str(exc.value)
    signed = start_relay(world)  # a new start finds the CA and has it sign a new certificate
    try:
        with psycopg.connect(dsn(signed, agent, sslmode="verify-full", sslrootcert=root)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop_relay(signed)


def _auth_failures(user: str) -> list:
    from sqlalchemy import select

    from app.models import AuditEntry

    with session_scope() as s:
        return [e.data for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "auth.failed",
                                                                   AuditEntry.target == f"user:{user}"))]


def test_a_refused_login_is_an_audit_entry_without_the_token(relay):
    user = f"ghost-{time.time_ns()}"
    bad = "alk_" + "q" * 43
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn(relay, bad, user=user))
    deadline = time.monotonic() + 10
    while not _auth_failures(user) and time.monotonic() < deadline:
        time.sleep(0.05)
    (entry,) = _auth_failures(user)
    assert entry["protocol"] == "postgres" and entry["user"] == user and entry["reason"]
    assert bad not in repr(entry)
