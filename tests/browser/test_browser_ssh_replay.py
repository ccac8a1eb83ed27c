"""A shell recorded by the real SSH relay (real sshd, real `ssh -tt` driven by pexpect)
replays in the portal's asciinema-player."""
from __future__ import annotations

import os

import pexpect
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from app.db import session_scope
from app.models import RecordedSession, User
from app.recording import reset_recorder
from tests.browser.conftest import CHROMIUM_ARGS, LiveServer, login, shot  # noqa: F401
from tests.integration.portal.scenario import PASSWORD
from tests.integration.ssh.conftest import _store, relay, ssh_args, sshd, wait_for, world  # noqa: F401

PROMPT = "PROMPT-READY> "


def record_a_shell(relay, world) -> str:
    args = ssh_args(relay, key=world.agent_key, tty=True)
    child = pexpect.spawn(args[0], args[1:], encoding="utf-8", timeout=20, dimensions=(24, 80),
                          env={**os.environ, "TERM": "xterm-256color"})
    child.expect(r"[$#] ")
    child.sendline(f"PS1='{PROMPT}'")
    child.expect_exact(PROMPT)
    child.sendline("echo replay-''marker-ok")
    child.expect_exact("replay-marker-ok")
    child.sendline("rm -rf /tmp/airlock-replay-nothing")
    child.expect_exact("airlock: denied by rule no-rm-rf")
    child.sendline("exit")
    child.expect(pexpect.EOF)

    def ended():
        with session_scope() as s:
            rows = s.scalars(select(RecordedSession).where(RecordedSession.protocol == "ssh",
                                                           RecordedSession.ended_at.is_not(None))
                             .order_by(RecordedSession.started_at.desc())).all()
            return rows[0].id if rows and (rows[0].meta or {}).get("term") else None

    session_id = wait_for(ended, timeout=15)
    assert session_id
    return session_id


def test_a_relay_recording_replays_in_the_portal(browser, relay, world, monkeypatch):
    session_id = record_a_shell(relay, world)
    with session_scope() as s:
        if s.scalar(select(User).where(User.email == "auditor@example.com")) is None:
            s.add(User(email="auditor@example.com", name="Auditor", roles=["auditor"], source="portal",
                       password_hash=generate_password_hash(PASSWORD)))
    from app.portal import create_app

    reset_recorder()
    server = LiveServer(create_app()).start()
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=server.url)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        login(page, "auditor@example.com")
        page.goto(f"/sessions/{session_id}?autoplay=1&speed=8")
        page.locator("#player .ap-term").wait_for()
        page.wait_for_function(
            "() => { const t = document.querySelector('#player .ap-term');"
            " return t !== null && t.innerText.includes('airlock: denied by rule no-rm-rf'); }",
            timeout=20_000)
        assert "replay-marker-ok" in page.locator("#player .ap-term").inner_text()
        shot(page, "ssh-relay-replay")
    finally:
        context.close()
        server.stop()
        reset_recorder()
