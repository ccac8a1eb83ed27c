"""Every case of cases.yaml through the real relay and the real sshd: refused by the
named rule with exit status 126, the victim directory untouched; controls run."""
from __future__ import annotations

import pwd
import shutil
from pathlib import Path

import pytest
import yaml

from tests.integration.ssh.conftest import TARGET_USER, ssh

VICTIM = Path("/tmp/airlock-victim")
CASES = yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text())["cases"]


@pytest.fixture
def victim():
    shutil.rmtree(VICTIM, ignore_errors=True)
    VICTIM.mkdir()
    (VICTIM / "keep").write_text("still here\n")
    user = pwd.getpwnam(TARGET_USER)
    for p in (VICTIM, VICTIM / "keep"):
        shutil.chown(p, user.pw_uid, user.pw_gid)  # the target user could delete it
    yield VICTIM
    shutil.rmtree(VICTIM, ignore_errors=True)


def test_the_corpus_has_at_least_40_bypass_cases():
    assert len([c for c in CASES if "rule" in c]) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c["cmd"][:60] for c in CASES])
def test_case(case, relay, world, victim):
    command = case["cmd"].replace("VICTIM", str(victim))
    r = ssh(relay, command, world.tokens["agent"])
    if case.get("allowed"):
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 126, (r.returncode, r.stdout, r.stderr)
        assert r.stderr.startswith(f"airlock: denied by rule {case['rule']}:".encode()), r.stderr
    assert (victim / "keep").read_text() == "still here\n"
