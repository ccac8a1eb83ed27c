"""Interactive shells under a PTY, driven by pexpect through the real `ssh -tt`:
denied lines are stopped, allowed ones run, the terminal passes through, and the
session is recorded as asciicast v2."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pexpect

from app.db import session_scope
from app.recording import asciicast

from .conftest import TARGET_USER, events, ssh, ssh_args, wait_for

PROMPT = "PROMPT-READY> "


def spawn(relay, world, **kw) -> pexpect.spawn:
    args = ssh_args(relay, key=world.agent_key, tty=True)
    child = pexpect.spawn(args[0], args[1:], encoding="utf-8", timeout=20, dimensions=(24, 80),
                          env={**os.environ, "TERM": "xterm-256color"}, **kw)
    child.expect(r"[$#] ")
    # A prompt we can match exactly; the line itself is checked by the relay like any other.
    child.sendline(f"PS1='{PROMPT}'")
    child.expect_exact(PROMPT)
    return child


def test_denied_line_is_stopped_and_allowed_ones_run(relay, world):
    victim = Path(f"/tmp/airlock-pty-{time.time_ns()}")
    victim.mkdir()
    user = pwd.getpwnam(TARGET_USER)
    shutil.chown(victim, user.pw_uid, user.pw_gid)
    try:
        child = spawn(relay, world)
        child.sendline(f"rm -rf {victim}")
        child.expect_exact("airlock: denied by rule no-rm-rf: recursive deletes are not allowed")
        child.expect_exact(PROMPT)
        child.sendline("echo al''lowed-fortytwo")
        child.expect_exact("allowed-fortytwo")
        child.expect_exact(PROMPT)
        # the terminal's type and size reached the target, and a window change follows
        child.sendline("printenv TERM; stty size")
        child.expect_exact("xterm-256color")
        child.expect_exact("24 80")
        child.setwinsize(30, 100)
        time.sleep(0.3)
        child.sendline("stty size")
        child.expect_exact("30 100")
        child.sendline("exit")
        child.expect(pexpect.EOF)
        child.close()
        assert victim.exists()
    finally:
        shutil.rmtree(victim, ignore_errors=True)


def test_a_line_edited_out_of_sight_counts_as_opaque(relay, world):
    child = spawn(relay, world)
    child.send("ech\t")  # Tab completion: the relay cannot know the line the shell will run
    child.send(" hi\r")
    child.expect_exact("airlock: denied by rule no-opaque-code")
    child.expect_exact(PROMPT)
    child.sendline("exit")
    child.expect(pexpect.EOF)


def test_a_rule_can_deny_shells(relay, world):
    r = ssh(relay, None, world.tokens["ci"], extra=("-tt",))
    assert r.returncode == 126
    assert b"airlock: denied by rule no-shells-for-ci: interactive shells are not allowed for CI" in r.stderr


def test_a_piped_shell_is_checked_line_by_line(relay, world, tmp_path):
    script = b"echo first\nrm -rf /tmp/airlock-nothing\necho second\n"
    r = ssh(relay, None, world.tokens["agent"], input=script)
    assert r.stdout == b"first\nsecond\n"
    assert b"airlock: denied by rule no-rm-rf" in r.stderr


def test_the_shell_is_recorded_as_asciicast_v2(relay, world, tmp_path):
    child = spawn(relay, world)
    child.sendline("echo cast-marker-''2")
    child.expect_exact("cast-marker-2")
    child.setwinsize(40, 120)
    time.sleep(0.3)
    child.sendline("exit")
    child.expect(pexpect.EOF)

    def cast():
        found = [r for r, kind, data in events() if kind == "output" and "cast-marker-2" in data.get("text", "")]
        if not found:
            return None
        with session_scope() as s:
            text = asciicast(s, found[-1].id)
        return text if '"r"' in text else None

    text = wait_for(cast)
    assert text
    lines = text.splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and (header["width"], header["height"]) == (80, 24)
    assert header["env"]["TERM"] == "xterm-256color"
    frames = [json.loads(line) for line in lines[1:]]
    assert all(isinstance(t, (int, float)) and code in ("o", "i", "r") and isinstance(d, str) for t, code, d in frames)
    assert [t for t, _, _ in frames] == sorted(t for t, _, _ in frames)
    assert "".join(d for _, c, d in frames if c == "i").startswith("PS1=")
    assert any(c == "o" and "cast-marker-2" in d for _, c, d in frames)
    assert ["r", "120x40"] in [[c, d] for _, c, d in frames]
    (tmp_path / "session.cast").write_text(text)
    # asciinema itself reads it (a test dependency)
    out = subprocess.run([sys.executable, "-m", "asciinema", "cat", str(tmp_path / "session.cast")],
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and b"cast-marker-2" in out.stdout, out.stderr
