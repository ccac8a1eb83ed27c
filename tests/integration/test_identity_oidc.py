"""OIDC JWTs against a real local issuer (tests/oidc_issuer.py) over HTTP."""
from __future__ import annotations

import asyncio
import time

import pytest

from app.config import settings
from app.db import session_scope
from app.identity import (
    AuthError,
    Authenticator,
    IdPError,
    JWKSCache,
    OIDCVerifier,
    check_url,
)
from app.identity.jwks import http_get_json
from app.models import Group, ServiceAccount
from tests.oidc_issuer import LocalIssuer, hmac_token, tamper, unsigned_token


class Mono:
    """A fake monotonic clock for the JWKS cache (TTL, refetch rate limit, backoff)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class SpyFetch:
    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str):
        self.urls.append(url)
        return http_get_json(url, timeout=2.0)


@pytest.fixture
def idp():
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def other_idp():
    with LocalIssuer(path="/realms/other") as issuer:
        yield issuer


@pytest.fixture
def accounts(sqlite_store, idp):
    with session_scope() as s:
        ci = Group(name="ci")
        s.add_all([
            ServiceAccount(name="ci-runner", oidc_issuer=idp.issuer, oidc_subject="repo:acme/app",
                           groups=[ci], groups_claim="groups"),
            ServiceAccount(name="ec-agent", oidc_issuer=idp.issuer, oidc_subject="ec-sub", groups=[ci]),
            ServiceAccount(name="client-agent", oidc_issuer=idp.issuer, oidc_subject="client-123"),
            ServiceAccount(name="retired", oidc_issuer=idp.issuer, oidc_subject="gone", disabled=True),
        ])  # fmt: skip
    return idp


@pytest.fixture
def mono():
    return Mono()


@pytest.fixture
def spy():
    return SpyFetch()


@pytest.fixture
def auth(accounts, mono, spy):
    return Authenticator(oidc=OIDCVerifier(JWKSCache(spy, clock=mono)))


def refused(auth: Authenticator, token: str, claimed: str | None = None) -> str:
    with pytest.raises(AuthError) as info:
        auth.authenticate(token, claimed)
    assert token not in str(info.value)
    return info.value.reason


def add_account(**fields) -> None:
    with session_scope() as s:
        s.add(ServiceAccount(**fields))


# -- accepted ---------------------------------------------------------------------------


def test_rs256_token_maps_to_the_account_with_policy_and_claim_groups(auth, idp):
    token = idp.mint({"sub": "repo:acme/app", "groups": ["deployers", "ci"]})
    principal = auth.authenticate(token, claimed="ci-runner")
    assert principal.service_account == "ci-runner"
    assert principal.groups == frozenset({"ci", "deployers"})
    assert principal.via == "oidc"
    assert principal.subject == "repo:acme/app"


def test_es256_token_maps_to_the_account(auth, idp):
    token = idp.mint({"sub": "ec-sub", "groups": ["ignored: no groups_claim"]}, key=idp.ec_key)
    principal = auth.authenticate(token)
    assert principal.service_account == "ec-agent"
    assert principal.groups == frozenset({"ci"})


def test_ed25519_token_is_accepted(auth, idp):
    okp = idp.new_key("OKP")
    idp.publish([*idp.published, okp])
    assert auth.authenticate(idp.mint({"sub": "ec-sub"}, key=okp)).service_account == "ec-agent"


@pytest.mark.parametrize("claim", ["client_id", "azp"])
def test_client_id_or_azp_may_name_the_account(auth, idp, claim):
    token = idp.mint({"sub": "some-opaque-user-id", claim: "client-123"})
    assert auth.authenticate(token).service_account == "client-agent"


def test_sub_takes_precedence_over_client_id(auth, idp):
    token = idp.mint({"sub": "repo:acme/app", "client_id": "client-123"})
    assert auth.authenticate(token).service_account == "ci-runner"


def test_a_groups_claim_that_is_not_a_list_of_strings_adds_nothing(auth, idp):
    for bad in ("deployers", ["deployers", 3], {"a": 1}):
        token = idp.mint({"sub": "repo:acme/app", "groups": bad})
        assert auth.authenticate(token).groups == frozenset({"ci"})


def test_audience_may_be_a_list(auth, idp):
    token = idp.mint({"sub": "ec-sub", "aud": ["something-else", "airlock"]})
    assert auth.authenticate(token).service_account == "ec-agent"


def test_expected_audience_comes_from_settings(auth, idp, monkeypatch):
    monkeypatch.setenv("AIRLOCK_OIDC_AUDIENCE", "gateway.example")
    settings.cache_clear()
    assert refused(auth, idp.mint({"sub": "ec-sub"})) == "token audience mismatch"
    assert auth.authenticate(idp.mint({"sub": "ec-sub", "aud": "gateway.example"})).service_account == "ec-agent"


def test_claimed_user_must_match(auth, idp):
    token = idp.mint({"sub": "ec-sub"})
    assert refused(auth, token, claimed="ci-runner") == "user name does not match the credential"


def test_authenticate_async(auth, idp):
    token = idp.mint({"sub": "ec-sub"}, key=idp.ec_key)
    assert asyncio.run(auth.authenticate_async(token, "ec-agent")).service_account == "ec-agent"


# -- forged and invalid tokens ------------------------------------------------------------


def test_alg_none_is_rejected_before_any_fetch(auth, idp):
    token = unsigned_token(idp.claims({"sub": "ec-sub"}), header={"kid": idp.rsa_key.kid})
    assert refused(auth, token) == "token signing algorithm not allowed"
    assert idp.requests == []


@pytest.mark.parametrize("secret", ["pem", "jwk"])
def test_hs256_signed_with_the_public_key_is_rejected(auth, idp, secret):
    key_bytes = idp.public_pem() if secret == "pem" else idp.public_jwk_json()
    token = hmac_token(idp.claims({"sub": "repo:acme/app"}), key_bytes, header={"kid": idp.rsa_key.kid})
    assert refused(auth, token) == "token signing algorithm not allowed"


def test_hs256_is_rejected_by_the_verifier_itself(accounts, idp):
    """Even past the cheap header check, the joserfc registry refuses HS256."""
    verifier = OIDCVerifier(JWKSCache())
    token = hmac_token(idp.claims({"sub": "repo:acme/app"}), idp.public_pem(), header={"kid": idp.rsa_key.kid})
    keys = verifier.jwks.keys_for(idp.issuer, idp.rsa_key.kid)
    with pytest.raises(AuthError, match="algorithm not allowed"):
        verifier._decode(token, keys)


def test_expired_token_is_rejected(auth, idp):
    assert refused(auth, idp.mint({"sub": "ec-sub"}, expires_in=-60)) == "token expired"


def test_expiry_leeway_is_at_most_30_seconds(accounts, idp, mono):
    token = idp.mint({"sub": "ec-sub"}, expires_in=-10)
    lenient = Authenticator(oidc=OIDCVerifier(JWKSCache(clock=mono), leeway=30))
    strict = Authenticator(oidc=OIDCVerifier(JWKSCache(clock=mono), leeway=0))
    assert lenient.authenticate(token).service_account == "ec-agent"
    assert refused(strict, token) == "token expired"
    with pytest.raises(ValueError):
        OIDCVerifier(leeway=31)


def test_not_yet_valid_token_is_rejected(auth, idp):
    now = int(time.time())
    assert refused(auth, idp.mint({"sub": "ec-sub", "nbf": now + 300})) == "token not yet valid"
    assert auth.authenticate(idp.mint({"sub": "ec-sub", "nbf": now - 5})).service_account == "ec-agent"


def test_token_issued_in_the_future_is_rejected(auth, idp):
    assert refused(auth, idp.mint({"sub": "ec-sub", "iat": int(time.time()) + 600})) == "token issued in the future"


def test_missing_exp_is_rejected(auth, idp):
    assert refused(auth, idp.mint({"sub": "ec-sub"}, omit=["exp"])) == "token has no expiry"


def test_wrong_audience_is_rejected(auth, idp):
    assert refused(auth, idp.mint({"sub": "ec-sub", "aud": "some-other-api"})) == "token audience mismatch"
    assert refused(auth, idp.mint({"sub": "ec-sub"}, omit=["aud"])) == "token audience mismatch"


def test_token_signed_by_another_issuer_claiming_ours_is_rejected(auth, idp, other_idp):
    # Both issuers name their first key "rsa-1": the kid resolves, the signature must not.
    forged = other_idp.mint({"iss": idp.issuer, "sub": "repo:acme/app"})
    assert other_idp.rsa_key.kid == idp.rsa_key.kid
    assert refused(auth, forged) == "invalid token signature"
    assert other_idp.requests == []


def test_issuer_not_configured_for_any_account_is_rejected_without_fetching(auth, other_idp):
    token = other_idp.mint({"sub": "repo:acme/app"})
    assert refused(auth, token) == "token issuer is not trusted"
    assert other_idp.requests == []


def test_issuer_of_only_disabled_accounts_is_not_trusted(auth, other_idp):
    add_account(name="old", oidc_issuer=other_idp.issuer, oidc_subject="x", disabled=True)
    assert refused(auth, other_idp.mint({"sub": "x"})) == "token issuer is not trusted"
    assert other_idp.requests == []


def test_discovery_document_for_another_issuer_is_rejected(auth, idp):
    idp.discovery_overrides = {"issuer": "http://127.0.0.1:1"}
    assert refused(auth, idp.mint({"sub": "ec-sub"})) == "identity provider discovery names another issuer"
    assert idp.jwks_fetches == 0


def test_plain_http_jwks_uri_off_loopback_is_rejected(auth, idp, spy):
    idp.discovery_overrides = {"jwks_uri": "http://keys.example.com/jwks"}
    assert refused(auth, idp.mint({"sub": "ec-sub"})) == "jwks_uri must use https"
    assert spy.urls == [idp.discovery_url]


def test_tampered_payload_is_rejected(auth, idp):
    token = idp.mint({"sub": "ec-sub"})
    assert auth.authenticate(token).service_account == "ec-agent"
    assert refused(auth, tamper(token, sub="repo:acme/app")) == "invalid token signature"
    assert refused(auth, tamper(token, groups=["admins"])) == "invalid token signature"


def test_disabled_account_is_rejected(auth, idp):
    assert refused(auth, idp.mint({"sub": "gone"})) == "service account disabled"


def test_subject_without_an_account_is_rejected(auth, idp):
    assert refused(auth, idp.mint({"sub": "someone-else"})) == "no service account for this token subject"
    assert refused(auth, idp.mint(omit=["sub"])) == "no service account for this token subject"


def test_two_accounts_with_one_subject_is_rejected(auth, idp):
    add_account(name="ec-agent-twin", oidc_issuer=idp.issuer, oidc_subject="ec-sub")
    assert refused(auth, idp.mint({"sub": "ec-sub"})) == "token matches more than one service account"


@pytest.mark.parametrize("token", ["a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", "...", "x" * 20000 + ".a.b"])
def test_malformed_tokens_are_rejected(auth, token):
    with pytest.raises(AuthError):
        auth.authenticate(token)


def test_payload_that_is_not_an_object_is_rejected(auth, idp):
    token = idp.mint({"sub": "ec-sub"})
    header, _, sig = token.split(".")
    assert refused(auth, f"{header}.WzFd.{sig}") == "malformed token"


# -- issuer URLs --------------------------------------------------------------------------


@pytest.mark.parametrize("issuer", ["http://idp.example.com", "http://10.0.0.7:8080", "http://[2001:db8::1]"])
def test_plain_http_issuer_off_loopback_is_rejected_without_network(accounts, idp, spy, issuer):
    add_account(name="remote", oidc_issuer=issuer, oidc_subject="remote-sub")
    auth = Authenticator(oidc=OIDCVerifier(JWKSCache(spy)))
    token = idp.mint({"iss": issuer, "sub": "remote-sub"})
    assert refused(auth, token) == "issuer must use https"
    assert spy.urls == []
    assert idp.requests == []


@pytest.mark.parametrize(
    "url", ["https://idp.example.com", "https://idp.example.com/realms/x", "http://127.0.0.1:9999",
            "http://127.8.9.10", "http://localhost:8080", "http://[::1]:8080"],
)  # fmt: skip
def test_allowed_issuer_urls(url):
    check_url(url)


@pytest.mark.parametrize(
    "url", ["http://example.com", "ftp://127.0.0.1", "https://idp.example.com?x=1", "https://",
            "https://user:pw@idp.example.com", "http://localhost.example.com", "idp.example.com"],
)  # fmt: skip
def test_refused_issuer_urls(url):
    with pytest.raises(IdPError):
        check_url(url)


# -- JWKS cache, refetch and rotation --------------------------------------------------------


def test_jwks_is_cached(auth, idp, mono):
    for i in range(25):
        key = idp.rsa_key if i % 2 else idp.ec_key
        assert auth.authenticate(idp.mint({"sub": "ec-sub"}, key=key)).service_account == "ec-agent"
    assert idp.jwks_fetches == 1 and idp.discovery_fetches == 1
    mono.advance(601)  # past the TTL: discovery and keys again
    auth.authenticate(idp.mint({"sub": "ec-sub"}))
    assert idp.jwks_fetches == 2 and idp.discovery_fetches == 2


def test_unknown_kid_refetches_once_then_rejects(auth, idp, mono):
    auth.authenticate(idp.mint({"sub": "ec-sub"}))
    assert idp.jwks_fetches == 1
    mono.advance(11)
    assert refused(auth, idp.mint({"sub": "ec-sub"}, header={"kid": "bogus-1"})) == "unknown token signing key"
    assert idp.jwks_fetches == 2
    # A flood of made-up kids within the rate-limit window fetches nothing more.
    for i in range(30):
        refused(auth, idp.mint({"sub": "ec-sub"}, header={"kid": f"bogus-{i + 2}"}))
    assert idp.jwks_fetches == 2
    mono.advance(11)
    refused(auth, idp.mint({"sub": "ec-sub"}, header={"kid": "bogus-99"}))
    assert idp.jwks_fetches == 3
    assert idp.discovery_fetches == 1  # a refetch reuses the discovered jwks_uri


def test_unknown_kid_on_a_cold_cache_fetches_once(auth, idp):
    assert refused(auth, idp.mint({"sub": "ec-sub"}, header={"kid": "bogus"})) == "unknown token signing key"
    assert idp.jwks_fetches == 1


def test_key_rotation_is_picked_up_with_one_refetch(auth, idp, mono):
    old_token = idp.mint({"sub": "repo:acme/app"})
    auth.authenticate(old_token)
    new_key = idp.rotate("RSA")
    mono.advance(11)
    new_token = idp.mint({"sub": "repo:acme/app"}, key=new_key)
    assert auth.authenticate(new_token).service_account == "ci-runner"
    assert idp.jwks_fetches == 2
    # The old key is no longer published: its tokens stop working, with no new fetch.
    assert refused(auth, old_token) == "unknown token signing key"
    assert idp.jwks_fetches == 2


def test_key_rotation_within_the_rate_limit_window_waits_for_it(auth, idp, mono):
    auth.authenticate(idp.mint({"sub": "repo:acme/app"}))
    new_token = idp.mint({"sub": "repo:acme/app"}, key=idp.rotate("RSA", keep_old=True))
    mono.advance(3)
    assert refused(auth, new_token) == "unknown token signing key"
    mono.advance(8)
    assert auth.authenticate(new_token).service_account == "ci-runner"
    assert idp.jwks_fetches == 2


def test_token_without_kid_uses_the_only_key(accounts, idp, mono):
    idp.publish([idp.rsa_key])
    auth = Authenticator(oidc=OIDCVerifier(JWKSCache(clock=mono)))
    assert auth.authenticate(idp.mint({"sub": "ec-sub"}, header={"kid": None})).service_account == "ec-agent"


def test_token_without_kid_is_rejected_when_keys_are_ambiguous(auth, idp):
    assert refused(auth, idp.mint({"sub": "ec-sub"}, header={"kid": None})) == "unknown token signing key"


def test_symmetric_keys_in_the_jwks_are_ignored(auth, idp):
    from joserfc.jwk import OctKey

    oct_key = OctKey.generate_key(256, parameters={"kid": "hmac"}, private=True)
    idp.publish([*idp.published, oct_key])
    assert refused(auth, idp.mint({"sub": "ec-sub"}, key=oct_key, alg="HS256")) == "token signing algorithm not allowed"
    keys = auth.oidc.jwks.keys_for(idp.issuer, None)
    assert sorted(k.key_type for k in keys.keys) == ["EC", "RSA"]


# -- IdP failures ------------------------------------------------------------------------------


def test_idp_down_is_an_auth_error(auth, idp):
    token = idp.mint({"sub": "ec-sub"})
    idp.stop()
    assert refused(auth, token) == "identity provider unreachable"


def test_idp_errors_back_off_then_recover(auth, idp, mono):
    token = idp.mint({"sub": "ec-sub"})
    idp.fail_with = 503
    assert refused(auth, token) == "identity provider unreachable"
    seen = len(idp.requests)
    for _ in range(10):
        assert refused(auth, token) == "identity provider unreachable"
    assert len(idp.requests) == seen  # backing off: no request while the IdP is failing
    idp.fail_with = None
    mono.advance(6)
    assert auth.authenticate(token).service_account == "ec-agent"


def test_idp_serving_garbage_keys_is_an_auth_error(auth, idp):
    idp.publish([])
    assert refused(auth, idp.mint({"sub": "ec-sub"})) == "identity provider returned an invalid response"


def test_store_down_on_the_jwt_path_is_an_auth_error(auth, idp, monkeypatch):
    from app import db

    token = idp.mint({"sub": "ec-sub"})
    monkeypatch.setenv("AIRLOCK_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    settings.cache_clear()
    db.reset_engines()
    assert refused(auth, token) == "store unavailable"
    assert idp.requests == []
