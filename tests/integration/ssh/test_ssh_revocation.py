"""An open SSH connection follows its credential and its grant (the relay core's token
re-check and grant watcher, app/relay/session.py): a revoked token runs nothing more,
and a revoked grant closes even an idle connection."""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import asyncssh
from sqlalchemy import select

from app.campaigns import decisions
from app.db import session_scope
from app.identity import issue_token, revoke_token
from app.models import Grant, utcnow


def _connect(relay, token: str):
    return asyncssh.connect("127.0.0.1", relay.port, username="box", password=token,
                            known_hosts=str(relay.known_hosts), client_keys=None)


def test_a_revoked_token_runs_nothing_more_on_its_open_connection(relay, world):
    with session_scope() as s:
        issued = issue_token(s, "agent", timedelta(hours=1))

    async def run():
        async with _connect(relay, issued.token) as conn:
            first = await conn.run("echo before", check=False)
            with session_scope() as s:
                revoke_token(s, issued.id, by="test")
            deadline = time.monotonic() + 5  # the gate hears of the revoke within a second
            while True:
                after = await conn.run("echo after", check=False)
                if after.exit_status != 0 or time.monotonic() > deadline:
                    return first, after
                await asyncio.sleep(0.1)

    first, after = asyncio.run(run())
    assert (first.exit_status, first.stdout) == (0, "before\n")
    assert after.exit_status == 126 and after.stdout == "", (after.exit_status, after.stdout)
    assert "no longer counts" in after.stderr, after.stderr


def test_a_revoked_grant_closes_an_idle_connection(relay, world):
    async def run():
        async with _connect(relay, world.tokens["leaver"]) as conn:
            first = await conn.run("echo hello", check=False)
            with session_scope() as s:
                grant = s.scalars(select(Grant.id).where(Grant.service_account.has(name="leaver"))).one()
                decisions.take_grant(s, grant, actor="test", reason="left the team", now=utcnow())
            await asyncio.wait_for(conn.wait_closed(), 5)  # closed by the relay, nothing sent
            return first

    first = asyncio.run(run())
    assert (first.exit_status, first.stdout) == (0, "hello\n")
