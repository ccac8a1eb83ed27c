"""Checks a command makes before it touches the store or opens a port.

Both failures are configuration mistakes, not crashes: the message says what to change,
the process exits with CONFIG_ERROR, and `airlock up` stops instead of restarting it.
"""
from __future__ import annotations

import errno
import socket
import sqlite3
from dataclasses import dataclass
from urllib.parse import quote

from app.config import Settings

# sysexits.h EX_CONFIG: the supervisor never restarts a child that exits with it.
CONFIG_ERROR = 78


class ConfigError(RuntimeError):
    """A setting or the state of AIRLOCK_HOME prevents this command from running."""


class StoreUnreachable(RuntimeError):
    """The store did not answer; unlike a ConfigError this may pass, so it may be retried."""


def require_initialised(cfg: Settings) -> None:
    """Refuse to run against a store `airlock init` has not made, and create nothing.

    Opening an SQLite URL creates the file (and app.db creates its directory), so an
    unmigrated store is detected without SQLAlchemy's engine: read-only for SQLite, and
    by asking for Alembic's table elsewhere.
    """
    hint = (f"AIRLOCK_HOME {cfg.home} has not been initialised: run `airlock init` there first, "
            "or set AIRLOCK_HOME (and AIRLOCK_DATABASE_URL) to an initialised one")
    if cfg.is_sqlite:
        from sqlalchemy.engine import make_url

        path = make_url(cfg.database_url).database
        if not path or path == ":memory:":
            return  # a private in-memory store: nothing can have initialised it but this process
        try:
            conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
        except sqlite3.OperationalError:
            raise ConfigError(f"{hint} ({path} does not exist)") from None
        try:
            migrated = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").fetchone()
        except sqlite3.OperationalError as exc:  # locked, unreadable: may pass
            raise StoreUnreachable(f"the store {path} cannot be read: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path} is not an airlock store ({exc})") from None
        finally:
            conn.close()
        if not migrated:
            raise ConfigError(f"{hint} ({path} holds no airlock store)")
        return
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    engine = create_engine(cfg.database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            migrated = inspect(conn).has_table("alembic_version")
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [""])[0]
        raise StoreUnreachable(f"the store of AIRLOCK_DATABASE_URL cannot be reached: {first_line}") from None
    finally:
        engine.dispose()
    if not migrated:
        raise ConfigError(f"{hint} (the database of AIRLOCK_DATABASE_URL holds no airlock store)")


@dataclass(frozen=True)
class Listener:
    process: str
    setting: str
    port: int


def listeners(cfg: Settings) -> dict[str, Listener]:
    """The port each process listens on, and the setting that moves it."""
    return {
        "portal": Listener("portal", "AIRLOCK_PORTAL_PORT", cfg.portal_port),
        "proxy": Listener("proxy", "AIRLOCK_PROXY_PORT", cfg.proxy_port),
        "relay": Listener("relay", "AIRLOCK_POSTGRES_PORT", cfg.postgres_port),
    }


def port_in_use_message(cfg: Settings, listener: Listener) -> str:
    return (f"the {listener.process} cannot listen on {cfg.bind}:{listener.port}: the port is already in use "
            f"(another airlock, or another program). Stop it, or choose another port with "
            f"{listener.setting}=PORT (and AIRLOCK_BIND for the address).")


def require_free_port(cfg: Settings, listener: Listener) -> None:
    """Refuse early, naming the setting, when the port is taken.

    A listening socket makes bind() fail even with SO_REUSEADDR, which every server here
    sets, so this sees what the server would see (bar a race with a process starting now).
    Port 0 asks the system for a free one and cannot clash.
    """
    if listener.port == 0:
        return
    try:
        infos = socket.getaddrinfo(cfg.bind, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"AIRLOCK_BIND={cfg.bind!r} is not an address this machine can listen on ({exc})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(port_in_use_message(cfg, listener)) from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise ConfigError(f"AIRLOCK_BIND={cfg.bind!r} is not an address of this machine") from None
                if exc.errno == errno.EACCES:
                    raise ConfigError(f"the {listener.process} may not listen on port {listener.port} "
                                      f"(ports below 1024 need privileges); set {listener.setting}") from None
                raise
