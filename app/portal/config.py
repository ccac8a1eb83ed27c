"""Portal settings from the environment (AIRLOCK_PORTAL_*). See docs/portal.md."""
from __future__ import annotations

import os
from dataclasses import dataclass


def _env(name: str, default: str = "") -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _list(name: str, default: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in _env(name, default).split(",") if x.strip())


def _bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if not raw:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class PortalSettings:
    oidc_issuer: str
    oidc_client_id: str
    oidc_client_secret: str
    oidc_groups_claim: str
    oidc_scopes: str
    oidc_label: str
    admin_groups: tuple[str, ...]
    auditor_groups: tuple[str, ...]
    approver_groups: tuple[str, ...]
    local_login: bool
    secure_cookies: bool
    session_hours: float
    threads: int
    poll_seconds: float

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)


def portal_settings() -> PortalSettings:
    # Read at app creation, not cached: tests build apps under different environments.
    from app.config import settings

    public = settings().public_url
    return PortalSettings(
        oidc_issuer=_env("AIRLOCK_PORTAL_OIDC_ISSUER").rstrip("/"),
        oidc_client_id=_env("AIRLOCK_PORTAL_OIDC_CLIENT_ID"),
        oidc_client_secret=_env("AIRLOCK_PORTAL_OIDC_CLIENT_SECRET"),
        oidc_groups_claim=_env("AIRLOCK_PORTAL_OIDC_GROUPS_CLAIM", "groups"),
        oidc_scopes=_env("AIRLOCK_PORTAL_OIDC_SCOPES", "openid email profile"),
        oidc_label=_env("AIRLOCK_PORTAL_OIDC_LABEL", "Single sign-on"),
        admin_groups=_list("AIRLOCK_PORTAL_ADMIN_GROUPS", "airlock-admins"),
        auditor_groups=_list("AIRLOCK_PORTAL_AUDITOR_GROUPS", "airlock-auditors"),
        approver_groups=_list("AIRLOCK_PORTAL_APPROVER_GROUPS", "airlock-approvers"),
        local_login=_bool("AIRLOCK_PORTAL_LOCAL_LOGIN", True),
        secure_cookies=_bool("AIRLOCK_PORTAL_SECURE_COOKIES", public.startswith("https://")),
        session_hours=float(_env("AIRLOCK_PORTAL_SESSION_HOURS", "12")),
        threads=int(_env("AIRLOCK_PORTAL_THREADS", "8")),
        poll_seconds=float(_env("AIRLOCK_PORTAL_POLL_SECONDS", "2")),
    )
