"""Relay settings from the environment (AIRLOCK_RELAY_*), next to app.config's ports and bind."""
from __future__ import annotations

import os
from dataclasses import dataclass

TARGET_TLS_MODES = ("disable", "prefer", "require", "verify-full")


@dataclass(frozen=True)
class RelayConfig:
    allow_plaintext: bool  # AIRLOCK_RELAY_ALLOW_PLAINTEXT=1: tokens without TLS (insecure, dev only)
    refuse_binary: bool  # AIRLOCK_RELAY_MASKED_BINARY=refuse|null
    record_rows: int  # AIRLOCK_RELAY_RECORD_ROWS: result rows kept per statement in the recording
    max_message: int  # AIRLOCK_RELAY_MAX_MESSAGE: bytes; larger client messages end the connection
    target_tls: str  # AIRLOCK_RELAY_TARGET_TLS: disable|prefer|require|verify-full
    login_timeout: float  # AIRLOCK_RELAY_LOGIN_TIMEOUT: seconds from connect to a finished login


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def relay_config() -> RelayConfig:
    binary = os.environ.get("AIRLOCK_RELAY_MASKED_BINARY", "null").strip().lower()
    if binary not in ("null", "refuse"):
        raise ValueError("AIRLOCK_RELAY_MASKED_BINARY must be null or refuse")
    target_tls = os.environ.get("AIRLOCK_RELAY_TARGET_TLS", "prefer").strip().lower()
    if target_tls not in TARGET_TLS_MODES:
        raise ValueError(f"AIRLOCK_RELAY_TARGET_TLS must be one of {', '.join(TARGET_TLS_MODES)}")
    return RelayConfig(
        allow_plaintext=_flag("AIRLOCK_RELAY_ALLOW_PLAINTEXT"),
        refuse_binary=binary == "refuse",
        record_rows=max(0, int(os.environ.get("AIRLOCK_RELAY_RECORD_ROWS", "20"))),
        max_message=max(1 << 16, int(os.environ.get("AIRLOCK_RELAY_MAX_MESSAGE", str(64 << 20)))),
        target_tls=target_tls,
        login_timeout=float(os.environ.get("AIRLOCK_RELAY_LOGIN_TIMEOUT", "30")),
    )
