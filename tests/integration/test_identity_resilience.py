"""Identity while the IdP is down: the last good JWKS until its maximum age, shared through
the store with nodes that never fetched it; `exp` (plus the leeway) carried on the Principal."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from app.config import settings
from app.db import session_scope
from app.identity import AuthError, Authenticator, IdentityUnavailable, JWKSCache, OIDCVerifier
from app.models import JWKSDocument, ServiceAccount
from tests.oidc_issuer import LocalIssuer

TTL, MAX_AGE = 600.0, 3600.0


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def idp(store):
    with LocalIssuer() as issuer:
        with session_scope() as s:
            s.add(ServiceAccount(name="ci", oidc_issuer=issuer.issuer, oidc_subject="ci-sub"))
        yield issuer


def node(clock: Clock, **kw) -> Authenticator:
    """One process's authenticator: its own JWKS cache, the shared store."""
    return Authenticator(oidc=OIDCVerifier(JWKSCache(clock=clock, ttl=TTL, max_age=MAX_AGE, **kw)))


def reason(auth: Authenticator, token: str) -> str:
    with pytest.raises(AuthError) as info:
        auth.authenticate(token)
    return info.value.reason


def test_cached_keys_outlive_the_ttl_while_the_idp_is_down_until_the_maximum_age(idp):
    clock = Clock()
    auth = node(clock)
    token = idp.mint({"sub": "ci-sub"}, expires_in=10_000)
    assert auth.authenticate(token).service_account == "ci"
    idp.stop()
    clock.t += TTL + 1  # due for a refresh, and the refresh fails
    assert auth.authenticate(token).service_account == "ci"
    clock.t += MAX_AGE - TTL - 2
    assert auth.authenticate(token).service_account == "ci"
    clock.t += 2  # the keys are now older than the maximum age
    with pytest.raises(IdentityUnavailable):
        auth.authenticate(token)
    assert reason(auth, token) == "identity provider unreachable"


def test_a_node_that_never_fetched_uses_the_stores_copy_while_the_idp_is_down(idp):
    clock = Clock()
    token = idp.mint({"sub": "ci-sub"}, expires_in=10_000)
    assert node(clock).authenticate(token).service_account == "ci"
    with session_scope() as s:
        assert s.scalar(select(JWKSDocument.issuer)) == idp.issuer
    idp.stop()
    assert node(clock).authenticate(token).service_account == "ci"
    # Without the store's copy the same node could not verify anything.
    assert reason(node(clock, shared=False), token) == "identity provider unreachable"
    clock.t += MAX_AGE + 1
    assert reason(node(clock), token) == "identity provider unreachable"


def test_a_fresh_shared_copy_saves_the_other_nodes_a_fetch(idp):
    clock = Clock()
    token = idp.mint({"sub": "ci-sub"})
    node(clock).authenticate(token)
    assert idp.jwks_fetches == 1
    for _ in range(3):
        node(clock).authenticate(token)
    assert idp.jwks_fetches == 1
    clock.t += TTL + 1  # stale everywhere: one node refreshes, and shares it again
    node(clock).authenticate(token)
    node(clock).authenticate(token)
    assert idp.jwks_fetches == 2


def test_a_token_signed_by_a_key_the_shared_copy_lacks_is_refused(idp):
    clock = Clock()
    node(clock).authenticate(idp.mint({"sub": "ci-sub"}))
    idp.stop()
    rogue = idp.new_key("RSA")  # never published: nobody fetched it
    token = idp.mint({"sub": "ci-sub"}, key=rogue)
    with pytest.raises(AuthError):
        node(clock).authenticate(token)


def test_the_principal_carries_exp_plus_the_leeway(idp, monkeypatch):
    token = idp.mint({"sub": "ci-sub"}, expires_in=120)
    exp = idp_exp(token)
    assert Authenticator().authenticate(token).expires_at == exp + 30
    monkeypatch.setenv("AIRLOCK_OIDC_LEEWAY_SECONDS", "5")
    settings.cache_clear()
    assert Authenticator().authenticate(token).expires_at == exp + 5
    monkeypatch.setenv("AIRLOCK_OIDC_LEEWAY_SECONDS", "31")
    settings.cache_clear()
    with pytest.raises(ValueError):
        Authenticator()


def test_the_maximum_age_cannot_be_below_the_ttl(store):
    with pytest.raises(ValueError):
        JWKSCache(ttl=600, max_age=60)


def idp_exp(token: str) -> int:
    from tests.oidc_issuer import decode_unverified

    return decode_unverified(token)[1]["exp"]
