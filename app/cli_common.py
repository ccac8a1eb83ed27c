"""Helpers the `airlock` subcommands share (app/cli.py and the cli_* modules beside it)."""
from __future__ import annotations

import sys
from datetime import timedelta
from typing import NoReturn

import click


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def message_of(exc: Exception) -> str:
    # str() of a KeyError (LookupError) is the repr of its message, quotes and all.
    return str(exc.args[0]) if exc.args else str(exc)


def parse_ttl(value: str) -> timedelta:
    from app.policy import parse_duration

    try:
        return timedelta(seconds=parse_duration(value))
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(f"{value!r} is not a duration like 30m, 1h or 7d") from exc
