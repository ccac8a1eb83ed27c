"""`airlock env`: every variable a runtime needs to reach its targets through airlock.

Pure: given the settings, a token and the connections it is granted, it returns the
variables and renders them for a shell. Getting one of these wrong fails open in
ways nobody notices (curl ignores upper-case HTTP_PROXY for http:// URLs and goes
straight to the upstream), so the runtime gets every spelling its clients read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import quote, urlsplit

SHELLS = ("sh", "fish", "powershell", "dotenv")
# Each ecosystem's way to trust a CA: OpenSSL (Python's ssl, Ruby, Go on Linux), requests
# (its own certifi bundle otherwise), Node.js, libpq, and curl (whose build may ignore
# SSL_CERT_FILE for a compiled-in bundle).
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PGSSLROOTCERT", "CURL_CA_BUNDLE")


@dataclass(frozen=True)
class Granted:
    name: str
    type: str
    hosts: tuple[str, ...] = ()  # http


@dataclass
class RuntimeEnv:
    variables: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the person running the command (stderr)


def build(*, service_account: str, token: str, host: str, proxy_port: int, postgres_port: int, public_url: str,
          ca_path: str, granted: list[Granted]) -> RuntimeEnv:
    env = RuntimeEnv()
    user, secret = quote(service_account, safe=""), quote(token, safe="")
    address = f"[{host}]" if ":" in host else host
    proxy = f"http://{user}:{secret}@{address}:{proxy_port}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env.variables.append((name, proxy))
    portal = (urlsplit(public_url).hostname or "").lower()
    clash = [g.name for g in granted if g.type == "http" and any(_bypassed_by(h, portal) for h in g.hosts)]
    if portal and not clash:
        # Runtimes may fetch a review_url; the portal is no target, so it is reached directly.
        env.variables += [("NO_PROXY", portal), ("no_proxy", portal)]
    elif portal:
        env.notes.append(f"NO_PROXY is not set: the portal's host {portal} would also let connection(s) "
                         f"{', '.join(clash)} bypass the proxy (clients match NO_PROXY by host and domain, "
                         "not port); review URLs are then reached through the proxy, which refuses them")
    for name in CA_VARIABLES:
        env.variables.append((name, ca_path))
    used: set[str] = set()
    for g in sorted(granted, key=lambda g: g.name):
        if g.type != "postgres":
            continue
        var = _unique(f"AIRLOCK_PG_{re.sub(r'[^A-Za-z0-9]+', '_', g.name).strip('_').upper() or 'X'}", used)
        dsn = (f"postgresql://{user}:{secret}@{address}:{postgres_port}/{quote(g.name, safe='')}"
               f"?sslmode=verify-full&sslrootcert={quote(ca_path, safe='/')}")
        env.variables.append((var, dsn))
    if host not in ("localhost", "127.0.0.1", "::1"):
        env.notes.append(f"sslmode=verify-full needs {host} in the relay's certificate: list it in "
                         "AIRLOCK_RELAY_TLS_HOSTNAMES on the relay")
    return env


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    return candidate


def _bypassed_by(pattern: str, no_proxy_host: str) -> bool:
    """Whether NO_PROXY=no_proxy_host would send requests for a connection host around the proxy."""
    host = pattern.lower().rsplit(":", 1)[0] if not pattern.startswith("[") else pattern.lower()
    return (host == no_proxy_host or host.endswith("." + no_proxy_host)
            or fnmatchcase(no_proxy_host, host) or fnmatchcase("x." + no_proxy_host, host))


def render(env: RuntimeEnv, shell: str) -> str:
    for name, value in env.variables:
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"{name} would hold a line break")
    lines = [_line(shell, name, value) for name, value in env.variables]
    return "\n".join(lines) + "\n"


def _line(shell: str, name: str, value: str) -> str:
    if shell == "sh":
        return f"export {name}='" + value.replace("'", "'\\''") + "'"
    if shell == "fish":
        return f"set -gx {name} '" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if shell == "powershell":
        return f"$env:{name} = '" + value.replace("'", "''") + "'"
    if shell == "dotenv":
        # Unquoted: docker --env-file takes the rest of the line literally; dotenv libraries agree.
        return f"{name}={value}"
    raise ValueError(f"unknown shell {shell!r}; one of {', '.join(SHELLS)}")
