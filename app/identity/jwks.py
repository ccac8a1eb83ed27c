"""Issuer discovery and a per-issuer JWKS cache.

The cache is what keeps the IdP out of the hot path: keys are fetched once per TTL
(and kept, up to a maximum age, while the IdP is down), and an unknown `kid` (a key rotation, or an attacker's made-up kid) may trigger at
most one refetch per `refetch_interval`, so a flood of bogus tokens cannot turn
airlock into a load generator against the IdP.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.identity.errors import IdPError

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 512 * 1024
# Symmetric keys in a JWKS would only ever serve HS* forgeries; drop them.
_SIGNING_KTYS = {"RSA", "EC", "OKP"}

FetchJSON = Callable[[str], Any]


class UnknownKeyId(Exception):
    """The token's `kid` is not in the issuer's JWKS, even after a refetch."""


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str = "issuer") -> None:
    """https, or plain http to a loopback address (local test IdPs); nothing else.

    Called before any network I/O, so a token naming a plain-http issuer on some
    other host never makes airlock connect anywhere.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise IdPError(f"{what} URL is not valid") from None
    if parts.query or parts.fragment or parts.username or parts.password:
        raise IdPError(f"{what} URL is not valid")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return
    raise IdPError(f"{what} must use https")


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document with TLS verification, no redirects and a size cap."""
    loopback = is_loopback_host(urlsplit(url).hostname)
    try:
        # Environment proxies are for reaching the outside world, never loopback.
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=not loopback) as client:
            with client.stream("GET", url, headers={"Accept": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise IdPError("identity provider unreachable")
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise IdPError("identity provider returned an invalid response")
    except httpx.HTTPError as exc:
        log.warning("identity provider fetch failed: %s: %s", url, type(exc).__name__)
        raise IdPError("identity provider unreachable") from None
    try:
        return json.loads(bytes(body))
    except ValueError:
        raise IdPError("identity provider returned an invalid response") from None


@dataclass
class _Issuer:
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: KeySet | None = None
    kids: frozenset[str] = frozenset()
    jwks_uri: str | None = None
    fetched_at: float = float("-inf")  # when the keys in hand were fetched from the IdP (by anyone)
    attempted_at: float = float("-inf")  # last JWKS fetch attempt, successful or not
    failed_at: float = float("-inf")
    shared_checked: float = float("-inf")  # last look at the store's copy


class JWKSCache:
    """Signing keys per issuer, discovered through the issuer's metadata.

    Keys are refreshed after `ttl`. While the IdP cannot be reached, the last good keys
    keep working until they are `max_age` old (then: "identity provider unreachable").
    With `shared`, every good fetch is written to the store and a process without fresh
    keys of its own reads them there first, so a new node or worker can verify tokens
    while the IdP is down, and a fleet refreshes about once per TTL, not once per process.
    """

    def __init__(
        self,
        fetch_json: FetchJSON | None = None,
        *,
        ttl: float | None = None,
        max_age: float | None = None,
        refetch_interval: float = 10.0,
        failure_backoff: float = 5.0,
        timeout: float = 5.0,
        shared: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        from app.config import settings

        self._fetch_json = fetch_json or (lambda url: http_get_json(url, timeout))
        self.ttl = settings().jwks_ttl_seconds if ttl is None else ttl
        self.max_age = settings().jwks_max_age_seconds if max_age is None else max_age
        if self.max_age < self.ttl:
            raise ValueError("the JWKS maximum age must be at least its TTL")
        self.refetch_interval = refetch_interval
        # While an IdP is down, refuse at once instead of making every caller wait
        # for a connect timeout (they all run on the relay's small thread pool).
        self.failure_backoff = failure_backoff
        self.shared = shared
        self._clock = clock
        self._issuers: dict[str, _Issuer] = {}
        self._lock = threading.Lock()

    def keys_for(self, issuer: str, kid: str | None) -> KeySet:
        """The issuer's keys, holding `kid` when one is given; raises UnknownKeyId."""
        check_url(issuer)
        with self._lock:
            entry = self._issuers.setdefault(issuer, _Issuer())
        with entry.lock:
            now = self._clock()
            fetched_now = False
            if entry.keys is None or now - entry.fetched_at >= self.ttl:
                fetched_now = self._refresh(entry, issuer, now)
            if kid is None or kid in entry.kids:
                return entry.keys  # type: ignore[return-value]
            if fetched_now or now - entry.attempted_at < self.refetch_interval:
                raise UnknownKeyId(kid)
            self._fetch(entry, issuer, now, rediscover=False)
            if kid in entry.kids:
                return entry.keys  # type: ignore[return-value]
            raise UnknownKeyId(kid)

    def _refresh(self, entry: _Issuer, issuer: str, now: float) -> bool:
        """Fresh keys from the store or the IdP; True if fetched from the IdP just now.
        Keeps the keys in hand, within `max_age`, when the IdP fails."""
        if self.shared and now - entry.shared_checked >= self.refetch_interval:
            entry.shared_checked = now
            self._adopt_shared(entry, issuer)
            if entry.keys is not None and now - entry.fetched_at < self.ttl:
                return False
        try:
            self._fetch(entry, issuer, now, rediscover=True)
            return True
        except IdPError as exc:
            if entry.keys is not None and now - entry.fetched_at < self.max_age:
                log.warning("identity provider %s: %s; using keys fetched %.0f s ago (maximum age %.0f s)",
                            issuer, exc.reason, now - entry.fetched_at, self.max_age)
                return False
            raise

    def _fetch(self, entry: _Issuer, issuer: str, now: float, rediscover: bool) -> None:
        if now - entry.failed_at < self.failure_backoff:
            raise IdPError("identity provider unreachable")
        entry.attempted_at = now
        try:
            if rediscover or entry.jwks_uri is None:
                entry.jwks_uri = self._discover(issuer)
            usable = _usable_keys(self._fetch_json(entry.jwks_uri))
            keys = _import_keys(usable)
        except IdPError:
            entry.failed_at = now
            raise
        except Exception:
            entry.failed_at = now
            log.exception("identity provider fetch failed for %s", issuer)
            raise IdPError("identity provider unreachable") from None
        entry.keys = keys
        entry.kids = frozenset(k.kid for k in keys.keys if k.kid)
        entry.fetched_at = now
        if self.shared:
            self._share(issuer, entry.jwks_uri, usable, now)

    # -- the store's copy (best effort: the store being down must not cost us the IdP) --

    def _adopt_shared(self, entry: _Issuer, issuer: str) -> None:
        from app.db import session_scope
        from app.models import JWKSDocument

        try:
            with session_scope() as s:
                row = s.get(JWKSDocument, issuer)
                if row is None or row.fetched_at <= entry.fetched_at:
                    return
                uri, document, fetched_at = row.jwks_uri, row.document, row.fetched_at
            check_url(uri, "jwks_uri")
            keys = _import_keys(_usable_keys(json.loads(document)))
        except Exception as exc:
            log.warning("could not read the shared JWKS of %s: %s", issuer, type(exc).__name__)
            return
        entry.keys, entry.jwks_uri, entry.fetched_at = keys, uri, fetched_at
        entry.kids = frozenset(k.kid for k in keys.keys if k.kid)

    def _share(self, issuer: str, jwks_uri: str, usable: list[dict], now: float) -> None:
        from app.db import session_scope
        from app.models import JWKSDocument

        try:
            with session_scope() as s:
                row = s.get(JWKSDocument, issuer)
                if row is None:
                    s.add(JWKSDocument(issuer=issuer, jwks_uri=jwks_uri, document=json.dumps({"keys": usable}),
                                       fetched_at=now))
                elif row.fetched_at < now:
                    row.jwks_uri, row.document, row.fetched_at = jwks_uri, json.dumps({"keys": usable}), now
        except Exception as exc:
            log.warning("could not share the JWKS of %s: %s", issuer, type(exc).__name__)

    def _discover(self, issuer: str) -> str:
        doc = self._fetch_json(issuer.rstrip("/") + DISCOVERY_PATH)
        if not isinstance(doc, dict):
            raise IdPError("identity provider returned an invalid response")
        # OIDC Discovery §4.3: a metadata document for another issuer must not be
        # used, or one IdP could vouch for keys of another.
        if doc.get("issuer") != issuer:
            raise IdPError("identity provider discovery names another issuer")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IdPError("identity provider returned an invalid response")
        check_url(jwks_uri, "jwks_uri")
        return jwks_uri


def _usable_keys(doc: Any) -> list[dict]:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise IdPError("identity provider returned an invalid response")
    return [
        k
        for k in doc["keys"]
        if isinstance(k, dict) and k.get("kty") in _SIGNING_KTYS and k.get("use", "sig") == "sig"
    ]


def _import_keys(usable: list[dict]) -> KeySet:
    try:
        return KeySet.import_key_set({"keys": usable})
    except (JoseError, ValueError, TypeError):
        raise IdPError("identity provider returned an invalid response") from None
