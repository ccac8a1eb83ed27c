"""Settings from the environment (AIRLOCK_*), read once per process.

`settings()` is cached; tests call `settings.cache_clear()` after changing the
environment.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _port(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"{name} must be a port number (0-65535), got {raw!r}")
    return port


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    secret_key: str | None
    oidc_audience: str
    public_url: str
    bus_poll_seconds: float
    record_flush_seconds: float
    record_lease_seconds: float
    portal_port: int
    proxy_port: int
    postgres_port: int
    mysql_port: int
    ssh_port: int
    bind: str
    slack_bot_token: str | None
    slack_signing_secret: str | None
    slack_app_token: str | None
    slack_default_channel: str | None
    slack_api_url: str | None
    # Resilience (docs/deployment.md): how long a fault may take to become a refusal.
    store_connect_timeout: float
    store_statement_timeout: float
    oidc_leeway_seconds: float
    jwks_ttl_seconds: float
    jwks_max_age_seconds: float
    scheduler_heartbeat_seconds: float
    scheduler_lease_seconds: float

    @property
    def ca_dir(self) -> Path:
        return self.home / "ca"

    @property
    def key_file(self) -> Path:
        return self.home / "secret.key"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def settings() -> Settings:
    home = Path(_env("AIRLOCK_HOME", "./var")).resolve()
    return Settings(
        home=home,
        database_url=_env("AIRLOCK_DATABASE_URL", f"sqlite:///{home / 'airlock.db'}"),
        secret_key=_env("AIRLOCK_SECRET_KEY"),
        oidc_audience=_env("AIRLOCK_OIDC_AUDIENCE", "airlock"),
        # Review links and the start-up banner point here: follow a moved portal port.
        public_url=_env("AIRLOCK_PUBLIC_URL", f"http://localhost:{_port('AIRLOCK_PORTAL_PORT', 8000)}").rstrip("/"),
        bus_poll_seconds=_float("AIRLOCK_BUS_POLL_SECONDS", 0.05),
        record_flush_seconds=_float("AIRLOCK_RECORD_FLUSH_SECONDS", 0.5),
        # A recorder heartbeats every lease/6 s; silent for a whole lease, its open
        # sessions are sealed as ended abnormally (app/recording_seal.py).
        record_lease_seconds=max(6.0, _float("AIRLOCK_RECORD_LEASE_SECONDS", 30.0)),
        portal_port=_port("AIRLOCK_PORTAL_PORT", 8000),
        proxy_port=_port("AIRLOCK_PROXY_PORT", 8080),
        postgres_port=_port("AIRLOCK_POSTGRES_PORT", 15432),
        mysql_port=_port("AIRLOCK_MYSQL_PORT", 13306),
        ssh_port=_port("AIRLOCK_SSH_PORT", 2222),
        bind=_env("AIRLOCK_BIND", "127.0.0.1"),
        slack_bot_token=_env("AIRLOCK_SLACK_BOT_TOKEN"),
        slack_signing_secret=_env("AIRLOCK_SLACK_SIGNING_SECRET"),
        slack_app_token=_env("AIRLOCK_SLACK_APP_TOKEN"),
        slack_default_channel=_env("AIRLOCK_SLACK_DEFAULT_CHANNEL"),
        slack_api_url=_env("AIRLOCK_SLACK_API_URL"),
        store_connect_timeout=_float("AIRLOCK_STORE_CONNECT_TIMEOUT", 5.0),
        store_statement_timeout=_float("AIRLOCK_STORE_STATEMENT_TIMEOUT", 10.0),
        oidc_leeway_seconds=_float("AIRLOCK_OIDC_LEEWAY_SECONDS", 30.0),
        jwks_ttl_seconds=_float("AIRLOCK_JWKS_TTL_SECONDS", 600.0),
        jwks_max_age_seconds=_float("AIRLOCK_JWKS_MAX_AGE_SECONDS", 86400.0),
        scheduler_heartbeat_seconds=_float("AIRLOCK_SCHEDULER_HEARTBEAT_SECONDS", 2.0),
        scheduler_lease_seconds=_float("AIRLOCK_SCHEDULER_LEASE_SECONDS", 10.0),
    )
