"""`airlock env SERVICE_ACCOUNT`: a token and the variables that send a runtime through airlock.

The variables themselves are worked out by app.runtime_env (pure); this reads the store.
"""
from __future__ import annotations

import click

from app.cli_common import fail, message_of, parse_ttl
from app.config import settings


@click.command("env")
@click.argument("service_account")
@click.option("--token-ttl", default="8h", show_default=True, help="Lifetime of the token it issues: 30m, 8h, 7d ...")
@click.option("--shell", "shell", type=click.Choice(["sh", "fish", "powershell", "dotenv"]), default="sh",
              show_default=True, help="How to print the variables.")
@click.option("--host", default=None,
              help="The name runtimes reach airlock by (default: AIRLOCK_BIND, or localhost when it binds every address).")
def env_command(service_account: str, token_ttl: str, shell: str, host: str | None) -> None:
    """Issue a token for SERVICE_ACCOUNT and print the variables that send a runtime through airlock.

    eval "$(airlock env etl-agent)" sets the proxy (every spelling clients read), the CA
    for each ecosystem, and a libpq DSN per granted PostgreSQL connection (AIRLOCK_PG_<NAME>).
    """
    from datetime import datetime, timezone

    from sqlalchemy import select

    from app import audit
    from app.ca import ca_cert_path
    from app.db import session_scope
    from app.identity import issue_token
    from app.models import Grant, ServiceAccount
    from app.runtime_env import Granted, build, render

    cfg = settings()
    ttl = parse_ttl(token_ttl)
    now = datetime.now(timezone.utc)
    ca = ca_cert_path(cfg.ca_dir)
    if not ca.exists():  # not made here: runtimes must trust the CA the proxy signs with
        fail(f"no CA at {ca}: run `airlock init`, or copy the proxy's $AIRLOCK_HOME/ca here")
    try:
        with session_scope() as s:
            account = s.scalars(select(ServiceAccount).where(ServiceAccount.name == service_account)).first()
            if account is None or account.disabled:
                raise LookupError(f"no service account {service_account!r} (declare it in the policy file)")
            granted = [Granted(g.connection.name, g.connection.type, tuple((g.connection.config or {}).get("hosts") or ()))
                       for g in s.scalars(select(Grant).where(Grant.service_account_id == account.id))
                       if g.revoked_at is None and (g.expires_at is None or _aware(g.expires_at) > now)]
            issued = issue_token(s, service_account, ttl, created_by="cli", description="airlock env")
            audit.append(s, actor="cli", action="token.issue", target=service_account,
                         data={"token_id": issued.id, "expires_at": issued.expires_at.isoformat(), "via": "env"})
    except (LookupError, ValueError) as exc:
        fail(message_of(exc))
    reach = host or (cfg.bind if cfg.bind not in ("0.0.0.0", "::", "") else "localhost")
    env = build(service_account=service_account, token=issued.token, host=reach, proxy_port=cfg.proxy_port,
                postgres_port=cfg.postgres_port, public_url=cfg.public_url,
                ca_path=str(ca), granted=granted)
    click.echo(render(env, shell), nl=False)
    for note in env.notes:
        click.echo(f"note: {note}", err=True)
    if not granted:
        click.echo(f"note: {service_account} holds no grant yet: every request will be refused (rule no-grant)", err=True)
    click.echo(f"token {issued.id} for {service_account}, expires {issued.expires_at:%Y-%m-%d %H:%M:%S} UTC "
               f"(airlock token revoke {issued.id} ends it)", err=True)


def _aware(when):
    from datetime import timezone

    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
