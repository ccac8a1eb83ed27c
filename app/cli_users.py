"""`airlock user reset-password EMAIL`: a new password for a local portal account, for
the admin who lost the one `airlock init` printed."""
from __future__ import annotations

import os
import secrets
import sys

import click


def banner(lines: list[str]) -> str:
    """A block that stands out from log lines around it (the scheduler's, the portal's)."""
    width = max(len(line) for line in lines) + 4
    rule = "=" * width
    return "\n".join(["", rule, *(f"  {line}" for line in lines), rule, ""])


@click.group("user")
def user_group() -> None:
    """Portal accounts."""


@user_group.command("reset-password")
@click.argument("email")
def reset_password(email: str) -> None:
    """Give the local account EMAIL a new random password, printed once."""
    from werkzeug.security import generate_password_hash

    from app import audit
    from app.db import session_scope
    from app.models import user_by_email

    email = email.strip().lower()
    password = secrets.token_urlsafe(18)
    with session_scope() as s:
        user = user_by_email(s, email)
        if user is None:
            click.echo(f"error: there is no portal account {email}", err=True)
            sys.exit(1)
        if user.source == "oidc":
            click.echo(f"error: {email} signs in with the identity provider; reset it there", err=True)
            sys.exit(1)
        # A new hash changes the account's stamp: every session signed in with the old one ends.
        user.password_hash = generate_password_hash(password)
        user.active = True
        audit.append(s, os.environ.get("USER") or "cli", "user.password_reset", email, {"via": "cli"})
    click.echo(banner([f"New portal password for {email}:", "", password, "",
                       "Shown only once. Change it on the Account page after signing in."]))
