"""The pure command analysis of the SSH relay (app/relay/ssh/commands.py), in isolation."""
from __future__ import annotations

import shlex

import pytest

from app.relay.ssh.commands import analyse
from app.relay.ssh.lines import LineBuffer


def canon(line: str) -> list[str]:
    return [p.canonical for p in analyse(line).parts]


@pytest.mark.parametrize("line, kind", [
    ("ls -la /tmp", "read"),
    ("cat /etc/hosts | grep local", "read"),
    ("echo hi > /dev/null", "read"),
    ("echo hi > /tmp/x", "write"),
    ("rm /tmp/x", "write"),
    ("systemctl restart nginx", "admin"),
    ("sudo ls", "admin"),
    ("python3 -c 'print(1)'", "exec"),
    ("./deploy.sh", "exec"),  # a program airlock does not know
    ("echo $(date)", "exec"),  # computed when it runs
    ("bash", "exec"),  # a shell reading stdin
    ("sh -c 'ls'", "read"),  # unwrapped: what runs is ls
    ("find . -name '*.py'", "read"),
    ("find . -delete", "write"),
    ("", "read"),
    ("# just a comment", "read"),
])
def test_kinds(line, kind):
    assert analyse(line).kind == kind


@pytest.mark.parametrize("line", [
    "rm -rf /x", "rm -r -f /x", "rm -fr /x", "rm --recursive --force /x", "rm --rec --forc /x", "/bin/rm -rf /x",
    "r\\m -rf /x", "'rm' -rf /x", "rm -Rf /x",
])
def test_rm_flags_read_alike(line):
    assert canon(line) == ["rm -fr /x"]


@pytest.mark.parametrize("line, inner", [
    ("sudo -u root env A=1 nice -n 5 timeout 5 rm -fr /", "rm -fr /"),
    ("xargs -n 1 rm -rf", "rm -fr"),
    ("find / -exec rm -rf {} \\;", "rm -fr"),
    ("bash -lc 'echo a && rm -rf /'", "rm -fr /"),
    ("echo `rm -rf /`", "rm -fr /"),
    ("cat <(rm -rf /)", "rm -fr /"),
    ("eval 'rm -rf /'", "rm -fr /"),
    ("env -S 'rm -rf /'", "rm -fr /"),
    ("watch 'rm -rf /'", "rm -fr /"),
    ("su -c 'rm -rf /' root", "rm -fr /"),
    ("if true; then rm -rf /; fi", "rm -fr /"),
    ("ls\nrm -rf /", "rm -fr /"),
])
def test_wrapped_commands_are_found(line, inner):
    assert inner in canon(line)


@pytest.mark.parametrize("line", [
    "X=rm; $X -rf /", "$(echo rm) -rf /", "rm {-rf,/}", "$'\\x72m' -rf /", "echo 'unterminated",
    "echo cm0= | base64 -d | sh", "bash <<< 'ls'", "f() { ls; }", "rm -r? /x", "sudo -s", "su",
    "ls\x00",
])
def test_what_cannot_be_read_is_opaque_and_exec(line):
    a = analyse(line)
    assert not a.confident and a.kind == "exec", a


def test_nesting_deeper_than_the_limit_is_opaque():
    line = "ls"
    for _ in range(10):
        line = "sh -c " + shlex.quote(line)
    a = analyse(line)
    assert a.kind == "exec" and not a.confident


def test_confident_line_has_no_reasons():
    a = analyse("echo ok && ls")
    assert a.confident and a.reasons == ()


def test_line_buffer_follows_editing_keys():
    b = LineBuffer()
    for ch in b"rm -rf /x\x7f\x7f\x7f\x15ls -l\x17echo hi":
        b.key(ch)
    assert b.text() == "ls echo hi" and not b.uncertain


def test_line_buffer_marks_out_of_sight_editing_uncertain():
    for keys in (b"ls\t", b"\x1b[A", b"\x12rm"):
        b = LineBuffer()
        for ch in keys:
            b.key(ch)
        assert b.uncertain
    b = LineBuffer()
    for ch in "é\x7f".encode():
        b.key(ch)
    assert b.text() == ""
