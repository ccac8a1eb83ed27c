"""The `airlock` command."""
from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

import click

from app.cli_common import fail, message_of, parse_ttl
from app.config import settings


# Commands that run before (or without) an initialised AIRLOCK_HOME.
NEEDS_NO_STORE = frozenset({"init"})
# Servers ride out a store outage themselves (refusing with 503, 08006, ...) and recover.
SERVERS = frozenset({"up", "portal", "proxy", "relay", "scheduler"})


class _Airlock(click.Group):
    """Remembers the words after the command name, so `airlock X --help` works anywhere."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta["airlock.args"] = rest
        return name, cmd, rest


@click.group(cls=_Airlock)
@click.pass_context
def main(ctx: click.Context) -> None:
    """airlock: an access gateway for machine identities."""
    from app.preflight import CONFIG_ERROR, ConfigError, StoreUnreachable, require_initialised

    if ctx.invoked_subcommand in NEEDS_NO_STORE or "--help" in ctx.meta.get("airlock.args", ()):
        return
    try:
        # Every other command reads the store: refuse before SQLAlchemy would create one.
        require_initialised(settings())
    except (ConfigError, ValueError) as exc:  # ValueError: a malformed AIRLOCK_* setting
        fail(str(exc), CONFIG_ERROR)
    except StoreUnreachable as exc:
        if ctx.invoked_subcommand not in SERVERS:
            fail(str(exc))
        click.echo(f"warning: {exc}; starting anyway, refusing what needs the store until it answers", err=True)


@main.command()
@click.option("--admin-email", default="admin@localhost", show_default=True, help="Local admin account for the portal.")
def init(admin_email: str) -> None:
    """Create $AIRLOCK_HOME, the secret key and the CA, and migrate the store."""
    from werkzeug.security import generate_password_hash
    from sqlalchemy import select

    from app import audit, vault
    from app.ca import ensure_ca
    from app.db import session_scope
    from app.migrate import upgrade
    from app.models import User

    cfg = settings()
    cfg.home.mkdir(parents=True, exist_ok=True)
    vault.load_key(cfg.home)
    ensure_ca(cfg.ca_dir)
    upgrade(cfg.database_url)
    from app.relay.ssh.hostkey import ensure_host_key, fingerprint

    key_path, made = ensure_host_key()
    click.echo(f"SSH relay host key {'created' if made else 'kept'}: {key_path}")
    click.echo(f"SSH relay host key fingerprint: {fingerprint()} (runtimes pin it in known_hosts)")
    with session_scope() as s:
        if not any("admin" in (u.roles or []) for u in s.scalars(select(User))):
            password = secrets.token_urlsafe(18)
            s.add(User(email=admin_email, name="Administrator", roles=["admin"], source="portal",
                       password_hash=generate_password_hash(password)))
            audit.append(s, actor="airlock init", action="user.create", target=admin_email, data={"roles": ["admin"]})
            from app.cli_users import banner

            # Framed, and on stderr too when stdout is not a terminal, so it is not lost in the
            # log lines of a scheduler or portal started by the same script.
            text = banner([f"Created the portal admin {admin_email}", f"password: {password}", "",
                           "Shown only once. Lost it? airlock user reset-password " + admin_email])
            click.echo(text)
            if not sys.stdout.isatty():
                click.echo(text, err=True)
    click.echo(f"airlock is ready in {cfg.home} ({_safe_url(cfg.database_url)})")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command()
@click.option("-f", "--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--actor", default="cli", show_default=True, help="Who is applying, for the audit log.")
def apply(path: Path, actor: str) -> None:
    """Make the store match a policy file (validated; all or nothing)."""
    from app.db import session_scope
    from app.inventory import UnresolvedSecret, apply_policy
    from app.policy import PolicyError, line_of, load_policy
    from app.vault import VaultError

    text = path.read_text()
    try:
        doc = load_policy(text, source=str(path))
    except PolicyError as exc:
        fail(f"{path} is invalid; nothing was changed.\n{exc}", 2)
    try:
        with session_scope() as s:
            report = apply_policy(s, doc, actor=actor)
    except UnresolvedSecret as exc:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path).lstrip(".")
        fail(f"{path}:{line_of(text, exc.path) or 0}: {field}: {exc.reason}; nothing was changed.", 2)
    except VaultError as exc:
        fail(f"{exc}; nothing was changed.", 2)
    click.echo(f"applied {path}: {report.summary()}")


@main.group()
def token() -> None:
    """airlock-minted tokens for service accounts that cannot do OIDC."""


@token.command("issue")
@click.argument("service_account")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 30m, 1h, 7d ...")
@click.option("--description", default="")
def token_issue(service_account: str, ttl: str, description: str) -> None:
    """Print a new token for SERVICE_ACCOUNT (shown once; stored only as a hash)."""
    from app import audit
    from app.db import session_scope
    from app.identity import issue_token

    try:
        with session_scope() as s:
            issued = issue_token(s, service_account, parse_ttl(ttl), created_by="cli", description=description)
            audit.append(s, actor="cli", action="token.issue", target=service_account,
                         data={"token_id": issued.id, "expires_at": issued.expires_at.isoformat()})
    except (LookupError, ValueError) as exc:
        fail(message_of(exc))
    click.echo(issued.token)
    click.echo(f"token {issued.id} for {service_account}, expires {issued.expires_at:%Y-%m-%d %H:%M:%S} UTC", err=True)


@token.command("revoke")
@click.argument("token_id", type=int)
def token_revoke(token_id: int) -> None:
    """Revoke a token at once, in every process."""
    from app import audit
    from app.db import session_scope
    from app.identity import revoke_token

    try:
        with session_scope() as s:
            revoke_token(s, token_id, by="cli")
            audit.append(s, actor="cli", action="token.revoke", target=str(token_id))
    except (LookupError, ValueError) as exc:
        fail(message_of(exc))
    click.echo(f"token {token_id} revoked")


@token.command("list")
@click.argument("service_account")
def token_list(service_account: str) -> None:
    """List a service account's tokens (never their values)."""
    from app.db import session_scope
    from app.identity import list_tokens

    try:
        with session_scope() as s:
            tokens = list_tokens(s, service_account)
            lines = [f"{t.id}\talk_{t.prefix}…\t"
                     f"{'revoked' if t.revoked_at else f'expires {t.expires_at:%Y-%m-%d %H:%M}'}\t{t.description}"
                     for t in tokens]
    except LookupError as exc:
        fail(message_of(exc))
    for line in lines:
        click.echo(line)


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
def audit_verify() -> None:
    """Check the hash chain and every sealed recording; exit 1 on the first bad entry."""
    from app import audit
    from app.db import session_scope

    started = time.monotonic()
    with session_scope() as s:
        result = audit.verify(s)
    with session_scope() as s:
        audit.record_verification(s, os.environ.get("USER") or "cli", result, time.monotonic() - started, via="cli")
    if result.ok:
        click.echo(f"audit chain OK: {result.checked} entries verified")
        return
    fail(f"audit chain BROKEN at entry {result.first_bad_seq}: {result.reason} ({result.checked} entries checked)")


@audit_group.command("export")
@click.option("--since", "since_seq", type=int, default=None, help="Only entries after this sequence number.")
def audit_export(since_seq: int | None) -> None:
    """Write the audit log as JSON lines to stdout (for a SIEM)."""
    from app import audit
    from app.db import session_scope

    with session_scope() as s:
        audit.export(s, sys.stdout, since_seq=since_seq)


@main.command()
def up() -> None:
    """Run every airlock process on this machine, supervised (Ctrl-C stops them all)."""
    from app.supervisor import available, run_all

    names = available()
    for name in names:
        _require_port(name)
    sys.exit(run_all(names))


def _require_port(process: str) -> None:
    """Stop with the setting that moves the port, rather than crash in the server."""
    from app.preflight import CONFIG_ERROR, ConfigError, listeners, require_free_port

    listener = listeners(settings()).get(process)
    if listener is not None:
        try:
            require_free_port(settings(), listener)
        except ConfigError as exc:
            fail(str(exc), CONFIG_ERROR)


def _serve(process: str, run) -> None:
    """Run a listening process; a port taken between the check and bind() still names the setting."""
    import errno

    from app.preflight import CONFIG_ERROR, ConfigError, listeners, port_in_use_message

    _require_port(process)
    try:
        run()
    except ConfigError as exc:  # e.g. the relay's second listener (MySQL) names its own setting
        fail(str(exc), CONFIG_ERROR)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        fail(port_in_use_message(settings(), listeners(settings())[process]), CONFIG_ERROR)


@main.command()
def portal() -> None:
    """Run the web portal (reviews, sessions, audit, policy) on port 8000."""
    from app.portal import run

    _serve("portal", run)


@main.command()
def proxy() -> None:
    """Run the HTTP(S) proxy for runtimes that set HTTPS_PROXY (port 8080)."""
    from app.proxy import run

    _serve("proxy", run)


@main.command()
def relay() -> None:
    """Run the PostgreSQL (15432), MySQL (13306) and SSH (2222) relays."""
    from app.relay.server import run

    _serve("relay", run)


@main.group()
def ca() -> None:
    """The certificate authority runtimes trust for HTTPS through the proxy."""


@ca.command("path")
def ca_path() -> None:
    """Print the path of the CA certificate runtimes must trust."""
    from app.ca import ca_cert_path, ensure_ca

    ensure_ca(settings().ca_dir)
    click.echo(str(ca_cert_path(settings().ca_dir)))


@main.command()
def scheduler() -> None:
    """Run the scheduler: review expiry, grant expiry, campaigns."""
    from app.scheduler import run

    run()


from app.cli_campaigns import register as _register_campaigns  # noqa: E402  (campaign, access)

_register_campaigns(main)

from app.cli_env import env_command  # noqa: E402

main.add_command(env_command)

from app.cli_users import user_group  # noqa: E402  (airlock user reset-password)

main.add_command(user_group)

if __name__ == "__main__":
    main()
