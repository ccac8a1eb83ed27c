"""A local OIDC issuer for tests: discovery document + JWKS over plain HTTP on
127.0.0.1, and a minter for tokens with any header and claims.

    with LocalIssuer() as idp:                      # or idp = LocalIssuer().start()
        token = idp.mint({"sub": "ci-job"})         # RS256, kid of idp.rsa_key
        token = idp.mint(key=idp.ec_key)            # ES256
        idp.rotate("RSA")                           # new kid, old key unpublished
        idp.jwks_fetches                            # how often the JWKS was served

Forgeries that a verifier must refuse: `unsigned_token`, `hmac_token`, `tamper`.
"""
from __future__ import annotations

import base64
import hmac
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

DEFAULT_AUDIENCE = "airlock"
_DEFAULT_ALG = {"RSA": "RS256", "EC": "ES256", "OKP": "Ed25519"}
_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def _unb64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def unsigned_token(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An `alg: none` JWT with an empty signature."""
    return f"{_b64json({'alg': 'none', 'typ': 'JWT', **(header or {})})}.{_b64json(claims)}."


def hmac_token(
    claims: dict[str, Any], secret: bytes, alg: str = "HS256", header: dict[str, Any] | None = None
) -> str:
    """An HS* JWT signed with `secret`, e.g. a public key's PEM (algorithm confusion)."""
    signing_input = f"{_b64json({'alg': alg, 'typ': 'JWT', **(header or {})})}.{_b64json(claims)}"
    sig = hmac.new(secret, signing_input.encode("ascii"), _HMAC[alg]).digest()
    return f"{signing_input}.{b64url(sig)}"


def tamper(token: str, **changes: Any) -> str:
    """Change payload claims but keep the original header and signature."""
    header, payload, signature = token.split(".")
    claims = _unb64json(payload)
    claims.update(changes)
    return f"{header}.{_b64json(claims)}.{signature}"


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return _unb64json(header), _unb64json(payload)


def generate_key(kind: str, kid: str) -> Key:
    """A private signing key: kind RSA (2048), EC (P-256) or OKP (Ed25519)."""
    params = {"kid": kid, "use": "sig"}
    if kind == "RSA":
        return RSAKey.generate_key(2048, parameters=params, private=True)
    if kind == "EC":
        return ECKey.generate_key("P-256", parameters=params, private=True)
    if kind == "OKP":
        return OKPKey.generate_key("Ed25519", parameters=params, private=True)
    raise ValueError(f"unknown key kind {kind!r}")


class LocalIssuer:
    """An OIDC issuer on 127.0.0.1 (free port) in a daemon thread.

    `path` puts the issuer below a path (like Keycloak realms). `audience` is the
    default `aud` of minted tokens. Published keys start as one RSA and one EC key.
    """

    def __init__(self, *, path: str = "", audience: str = DEFAULT_AUDIENCE, host: str = "127.0.0.1"):
        self.path = path.rstrip("/")
        self.audience = audience
        self.host = host
        self._serials: dict[str, int] = {}
        self.rsa_key: Key = self.new_key("RSA")
        self.ec_key: Key = self.new_key("EC")
        self.published: list[Key] = [self.rsa_key, self.ec_key]
        # Merged into the discovery document, e.g. {"issuer": "http://elsewhere"}.
        self.discovery_overrides: dict[str, Any] = {}
        # When set, every endpoint answers with this HTTP status (an IdP in trouble).
        self.fail_with: int | None = None
        self.requests: list[str] = []
        self._counts = {"jwks": 0, "discovery": 0}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> LocalIssuer:
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer((self.host, self.port or 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # A short poll interval makes stop() (shutdown) return quickly.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="local-oidc-issuer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; the port is closed, so clients see connection refused."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------

    @property
    def issuer(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalIssuer not started")
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks"

    # -- counters ------------------------------------------------------------------

    @property
    def jwks_fetches(self) -> int:
        with self._lock:
            return self._counts["jwks"]

    @property
    def discovery_fetches(self) -> int:
        with self._lock:
            return self._counts["discovery"]

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = {"jwks": 0, "discovery": 0}
            self.requests.clear()

    # -- keys ----------------------------------------------------------------------

    def new_key(self, kind: str = "RSA", kid: str | None = None) -> Key:
        """A fresh private key with a unique kid (e.g. "rsa-2"); not yet published."""
        if kid is None:
            n = self._serials[kind] = self._serials.get(kind, 0) + 1
            kid = f"{kind.lower()}-{n}"
        return generate_key(kind, kid)

    def publish(self, keys: Iterable[Key]) -> None:
        """Serve exactly these keys (their public halves) from the JWKS."""
        self.published = list(keys)

    def rotate(self, kind: str = "RSA", *, keep_old: bool = False) -> Key:
        """Replace the current key of `kind` with a new one (new kid) and return it."""
        new = self.new_key(kind)
        old = self.rsa_key if kind == "RSA" else self.ec_key if kind == "EC" else None
        keys = [k for k in self.published if keep_old or k is not old]
        self.publish([*keys, new])
        if kind == "RSA":
            self.rsa_key = new
        elif kind == "EC":
            self.ec_key = new
        return new

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.published]}

    def public_pem(self, key: Key | None = None) -> bytes:
        return (key or self.rsa_key).as_pem(private=False)

    def public_jwk_json(self, key: Key | None = None) -> bytes:
        return json.dumps((key or self.rsa_key).as_dict(private=False)).encode()

    # -- tokens --------------------------------------------------------------------

    def claims(self, claims: dict[str, Any] | None = None, *, expires_in: int = 300,
               omit: Iterable[str] = ()) -> dict[str, Any]:
        """Default claims (iss, aud, sub, iat, exp) merged with `claims`, minus `omit`."""
        now = int(time.time())
        out: dict[str, Any] = {"iss": self.issuer, "aud": self.audience, "sub": "agent",
                               "iat": now, "exp": now + expires_in}
        out.update(claims or {})
        for name in omit:
            out.pop(name, None)
        return out

    def mint(
        self,
        claims: dict[str, Any] | None = None,
        *,
        key: Key | None = None,
        alg: str | None = None,
        header: dict[str, Any] | None = None,
        omit: Iterable[str] = (),
        expires_in: int = 300,
    ) -> str:
        """Sign a JWT. `header` entries override the defaults (alg, typ, kid); a value
        of None removes that header. The key need not be published."""
        key = key or self.rsa_key
        alg = alg or _DEFAULT_ALG[key.key_type]
        hdr: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": key.kid}
        hdr.update(header or {})
        hdr = {k: v for k, v in hdr.items() if v is not None}
        registry = JWSRegistry(algorithms=[hdr["alg"]], strict_check_header=False)
        return jwt.encode(hdr, self.claims(claims, expires_in=expires_in, omit=omit), key, registry=registry)

    # -- HTTP ----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = urlsplit(self.path).path
                with issuer._lock:
                    issuer.requests.append(path)
                if issuer.fail_with is not None:
                    self._send(issuer.fail_with, {"error": "unavailable"})
                elif path == issuer.path + "/.well-known/openid-configuration":
                    with issuer._lock:
                        issuer._counts["discovery"] += 1
                    doc = {
                        "issuer": issuer.issuer,
                        "jwks_uri": issuer.jwks_uri,
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                    }
                    self._send(200, {**doc, **issuer.discovery_overrides})
                elif path == issuer.path + "/jwks":
                    with issuer._lock:
                        issuer._counts["jwks"] += 1
                    self._send(200, issuer.jwks())
                else:
                    self._send(404, {"error": "not found"})

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        return Handler
