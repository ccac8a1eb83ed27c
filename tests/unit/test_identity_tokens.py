"""airlock-minted tokens and the Authenticator's token path, on SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from app import db
from app.config import settings
from app.db import session_scope
from app.identity import (
    AuthError,
    Authenticator,
    UnknownServiceAccount,
    issue_token,
    list_tokens,
    revoke_token,
)
from app.models import Base, Group, ServiceAccount, StoreVersion, Token, utcnow
from app.versions import bump_version, current_version, version_reader


class FakeClock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _add_accounts() -> None:
    with session_scope() as s:
        s.add(ServiceAccount(name="etl-agent", groups=[Group(name="etl"), Group(name="readers")]))
        s.add(ServiceAccount(name="other-agent"))


def _issue(name: str = "etl-agent", ttl: timedelta = timedelta(hours=1), **kw):
    with session_scope() as s:
        return issue_token(s, name, ttl, **kw)


def _revoke(token_id: int) -> None:
    with session_scope() as s:
        revoke_token(s, token_id, by="admin@example.com")


def _refused(auth: Authenticator, credential: str, claimed: str | None = None) -> str:
    with pytest.raises(AuthError) as info:
        auth.authenticate(credential, claimed)
    assert credential not in str(info.value)
    return info.value.reason


@pytest.fixture
def accounts(store):
    _add_accounts()
    return store


# -- issuing -------------------------------------------------------------------------


def test_issued_token_has_the_documented_shape(accounts):
    issued = _issue(description="nightly etl", created_by="admin@example.com")
    assert issued.token.startswith("alk_") and len(issued.token) == 4 + 43
    assert issued.prefix == issued.token[4:12]
    assert issued.id > 0
    assert issued.token not in repr(issued)
    assert timedelta(minutes=59) < issued.expires_at - utcnow() <= timedelta(hours=1)
    assert _issue().token != issued.token


def test_minted_token_authenticates_with_the_accounts_groups(accounts):
    issued = _issue()
    principal = Authenticator().authenticate(issued.token)
    assert principal.service_account == "etl-agent"
    assert principal.groups == frozenset({"etl", "readers"})
    assert principal.via == "token"
    assert principal.subject == f"token:{issued.id}"
    assert Authenticator().authenticate(issued.token, claimed="etl-agent") == principal


def test_expired_token_is_refused(accounts):
    issued = _issue(ttl=timedelta(minutes=5))
    clock = FakeClock()
    auth = Authenticator(clock=clock)
    auth.authenticate(issued.token)
    clock.t = issued.expires_at.timestamp()
    assert _refused(auth, issued.token) == "token expired"


def test_expired_token_is_refused_from_the_cache_too(accounts):
    issued = _issue(ttl=timedelta(seconds=20))
    clock = FakeClock()
    auth = Authenticator(version_source=version_reader(), clock=clock, cache_ttl=600)
    auth.authenticate(issued.token)
    clock.advance(21)
    assert _refused(auth, issued.token) == "token expired"


def test_revoked_token_is_refused(accounts):
    issued = _issue()
    _revoke(issued.id)
    assert _refused(Authenticator(), issued.token) == "token revoked"
    with session_scope() as s:
        [info] = list_tokens(s, "etl-agent")
    assert info.status() == "revoked" and info.revoked_at is not None


def test_unknown_and_malformed_tokens_are_refused(accounts):
    _issue()
    auth = Authenticator()
    assert _refused(auth, "alk_" + "A" * 43) == "unknown token"
    assert _refused(auth, "alk_short") == "unknown token"
    assert _refused(auth, "alk_" + "A" * 42 + "!") == "unknown token"


@pytest.mark.parametrize("credential", ["hunter2", "Bearer x", "a.b", "a.b.c.d", "\t"])
def test_unrecognised_credentials_are_refused(accounts, credential):
    assert _refused(Authenticator(), credential) == "unrecognised credential"


def test_empty_credential_is_refused(accounts):
    with pytest.raises(AuthError, match="unrecognised credential"):
        Authenticator().authenticate("")


def test_claimed_user_must_be_the_tokens_account(accounts):
    issued = _issue()
    auth = Authenticator(version_source=version_reader())
    for claimed in ("other-agent", "nobody", "", "ETL-AGENT"):
        assert _refused(auth, issued.token, claimed) == "user name does not match the credential"
    # ...also once the lookup is cached
    auth.authenticate(issued.token, "etl-agent")
    assert _refused(auth, issued.token, "other-agent") == "user name does not match the credential"


def test_disabled_service_account_is_refused(accounts):
    issued = _issue()
    with session_scope() as s:
        s.execute(update(ServiceAccount).where(ServiceAccount.name == "etl-agent").values(disabled=True))
    assert _refused(Authenticator(), issued.token) == "service account disabled"


def test_only_the_hash_is_stored(accounts):
    issued = _issue(description="ci")
    secret_part = issued.token[len("alk_"):]
    dump = []
    with db.engine().connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                dump.append(repr(tuple(row)))
    everything = "\n".join(dump)
    assert issued.token not in everything
    assert secret_part not in everything
    assert secret_part[8:] not in everything  # nothing beyond the display prefix
    with session_scope() as s:
        row = s.get(Token, issued.id)
        assert row.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
        assert row.prefix == issued.prefix


# -- caching and revocation ----------------------------------------------------------


def test_cache_is_keyed_by_the_policy_version(accounts):
    issued = _issue()
    auth = Authenticator(version_source=version_reader())
    auth.authenticate(issued.token)
    # A change that bypasses revoke_token (no version bump) is not seen: proof the
    # answer comes from the cache...
    with session_scope() as s:
        s.execute(text("UPDATE tokens SET revoked_at = CURRENT_TIMESTAMP WHERE id = :id"), {"id": issued.id})
    assert auth.authenticate(issued.token).service_account == "etl-agent"
    # ...until the version moves.
    with session_scope() as s:
        bump_version(s)
    assert _refused(auth, issued.token) == "token revoked"


def test_revocation_takes_effect_at_once_despite_the_cache(accounts):
    issued = _issue()
    auth = Authenticator(version_source=version_reader(), cache_ttl=3600)
    assert auth.authenticate(issued.token).service_account == "etl-agent"
    assert auth.authenticate(issued.token).service_account == "etl-agent"
    _revoke(issued.id)
    assert _refused(auth, issued.token) == "token revoked"


def test_without_a_version_source_nothing_is_cached(accounts):
    issued = _issue()
    auth = Authenticator()
    auth.authenticate(issued.token)
    with session_scope() as s:
        s.execute(update(Token).where(Token.id == issued.id).values(revoked_at=Token.created_at))
    assert _refused(auth, issued.token) == "token revoked"


def test_issue_and_revoke_bump_the_policy_version(accounts):
    with session_scope() as s:
        assert current_version(s) == 0
    issued = _issue()
    with session_scope() as s:
        assert current_version(s) == 1
    _revoke(issued.id)
    with session_scope() as s:
        assert current_version(s) == 2
    _revoke(issued.id)  # already revoked: nothing changes
    with session_scope() as s:
        assert current_version(s) == 2


def test_bump_version_creates_and_increments_counters(store):
    with session_scope() as s:
        assert current_version(s, "grants") == 0
        assert bump_version(s, "grants") == 1
        assert bump_version(s, "grants") == 2
        assert current_version(s, "policy") == 0
    with session_scope() as s:
        assert s.scalars(select(StoreVersion.name)).all() == ["grants"]
    assert version_reader("grants")() == 2


def test_last_used_at_is_written_at_most_once_a_minute(accounts):
    issued = _issue()
    clock = FakeClock()
    auth = Authenticator(version_source=version_reader(), clock=clock)

    def last_used():
        with session_scope() as s:
            return s.get(Token, issued.id).last_used_at

    assert last_used() is None
    auth.authenticate(issued.token)
    first = last_used()
    assert first is not None and abs(first.timestamp() - clock.t) < 1
    for _ in range(5):
        clock.advance(10)
        auth.authenticate(issued.token)  # served from the cache
    assert last_used() == first
    clock.advance(11)  # 61 s after the first use
    auth.authenticate(issued.token)
    assert abs(last_used().timestamp() - clock.t) < 1
    # A second process (fresh Authenticator) sees the stored time and does not write.
    second = last_used()
    clock.advance(5)
    Authenticator(clock=clock).authenticate(issued.token)
    assert last_used() == second


# -- issuing errors and listing -------------------------------------------------------


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1), timedelta(days=365, seconds=1)])
def test_issue_rejects_a_bad_ttl(accounts, ttl):
    with pytest.raises(ValueError, match="ttl"):
        _issue(ttl=ttl)


def test_issue_accepts_the_longest_ttl(accounts):
    assert _issue(ttl=timedelta(days=365)).id


def test_issue_for_an_unknown_account_is_a_clear_error(accounts):
    with pytest.raises(UnknownServiceAccount, match="nobody"):
        _issue("nobody")
    with session_scope() as s:
        assert s.scalars(select(Token)).all() == []
        assert current_version(s) == 0


def test_issue_for_a_disabled_account_is_refused(accounts):
    with session_scope() as s:
        s.execute(update(ServiceAccount).where(ServiceAccount.name == "other-agent").values(disabled=True))
    with pytest.raises(ValueError, match="disabled"):
        _issue("other-agent")


def test_revoke_unknown_token_id(accounts):
    with pytest.raises(LookupError):
        _revoke(12345)


def test_list_tokens(accounts):
    a = _issue(description="first", created_by="admin@example.com")
    b = _issue(description="second")
    _issue("other-agent")
    _revoke(a.id)
    with session_scope() as s:
        infos = list_tokens(s, "etl-agent")
        with pytest.raises(UnknownServiceAccount):
            list_tokens(s, "nobody")
    assert [(i.id, i.prefix, i.description, i.status()) for i in infos] == [
        (a.id, a.prefix, "first", "revoked"),
        (b.id, b.prefix, "second", "active"),
    ]
    assert infos[0].created_by == "admin@example.com"
    assert not hasattr(infos[0], "token_hash")


# -- failing closed --------------------------------------------------------------------


def test_store_down_is_an_auth_error(accounts, monkeypatch):
    issued = _issue()
    monkeypatch.setenv("AIRLOCK_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    settings.cache_clear()
    db.reset_engines()
    assert _refused(Authenticator(), issued.token) == "store unavailable"


def test_version_source_failure_is_an_auth_error(accounts):
    issued = _issue()

    def broken() -> int:
        raise RuntimeError("bus gone")

    assert _refused(Authenticator(version_source=broken), issued.token) == "authentication failed"


def test_authenticate_async_runs_off_the_event_loop(accounts):
    issued = _issue()
    threads = []

    def source() -> int:
        threads.append(threading.current_thread())
        return 1

    auth = Authenticator(version_source=source)

    async def main():
        principal = await auth.authenticate_async(issued.token, "etl-agent")
        with pytest.raises(AuthError, match="unknown token"):
            await auth.authenticate_async("alk_" + "B" * 43)
        return principal

    assert asyncio.run(main()).service_account == "etl-agent"
    assert threads and all(t is not threading.main_thread() for t in threads)
