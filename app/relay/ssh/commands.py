"""What an SSH command line would run: its simple commands, each with a kind (pure, no I/O).

The line is parsed with bashlex, a port of bash's own grammar (the target's login shell
is almost always bash or a POSIX sh that parses the same way). A hand-rolled splitter
on `;`, `&&`, `|` misses what bash sees: newlines, `$(...)`, backticks, process
substitution, function bodies, `if`/`for`/`while` bodies and here-documents. bashlex
gives each simple command as a node, with command substitutions nested inside words.

Every simple command becomes a `Part`: its program (basename), its words after quote
removal and a canonical text that rules' `command` patterns match. Wrappers that run
another command (`sudo`, `env`, `nice`, `timeout`, `xargs`, `find -exec`, `sh -c`,
`bash -c`, `eval`, ...) are unwrapped, and the inner command is checked too.

What cannot be known before bash runs it is treated as the most dangerous kind, `exec`:
a line bashlex cannot parse, a program name that is computed (`$X`, `$(...)`, globs,
brace expansion, odd characters), any parameter expansion (its value is the target's
secret), interpreters and shells that read code from stdin or a file, and programs
airlock does not know.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import bashlex
import bashlex.ast
import bashlex.errors

# Least to most dangerous: a rule on `kind: [write]` also sees what is unknown as exec.
KINDS = ("read", "write", "admin", "exec")
MOST_DANGEROUS = "exec"
MAX_DEPTH = 6  # nested sh -c / eval: deeper than this is refused as opaque

READ = frozenset("""
ls ll cat head tail grep egrep fgrep rg echo printf pwd whoami id date uname hostname df du ps stat file wc
sort uniq cut tr less more diff cmp which type true false test [ printenv uptime free base64 md5sum sha1sum
sha256sum sha512sum journalctl ss netstat lsof sleep seq basename dirname realpath readlink nproc lscpu
lsblk env groups w who last tac nl od xxd hexdump strings column jq yq tree locale getent dig nslookup host
ping tput stty tty clear history find exit cd : wait return shift read pushd popd dirs export unset alias umask
""".split())
WRITE = frozenset("""
rm rmdir mv cp mkdir touch ln tee dd truncate install rsync tar gzip gunzip zip unzip bzip2 xz unxz patch
git curl wget scp sftp shred mktemp split csplit
""".split())
ADMIN = frozenset("""
su systemctl service kill pkill killall reboot shutdown halt poweroff mount umount chown chmod chgrp
useradd userdel usermod passwd groupadd groupdel iptables ip6tables nft apt apt-get dpkg yum dnf rpm apk
pip pip3 npm crontab fdisk parted sfdisk modprobe insmod rmmod sysctl visudo docker podman kubectl
setfacl chattr swapoff swapon losetup
""".split())
SHELLS = frozenset("sh bash dash zsh ksh ash mksh busybox".split())
INTERPRETERS = frozenset("""
python python2 python3 perl ruby node nodejs php lua awk gawk mawk nawk sed tclsh expect osascript pwsh
source .
""".split())

# Wrappers: program -> (options that take a value, whether the wrapped command may be absent)
WRAPPERS: dict[str, frozenset[str]] = {
    "sudo": frozenset("-u -g -h -p -C -D -r -t -U -T".split()),
    "doas": frozenset("-u -C".split()),
    "env": frozenset("-u -C -S --unset --chdir --split-string".split()),
    "nice": frozenset("-n --adjustment".split()),
    "nohup": frozenset(),
    "time": frozenset("-f -o --format --output".split()),
    "command": frozenset(),
    "exec": frozenset("-a".split()),
    "builtin": frozenset(),
    "setsid": frozenset(),
    "stdbuf": frozenset("-i -o -e --input --output --error".split()),
    "ionice": frozenset("-c -n -p --class --classdata".split()),
    "chrt": frozenset(),
    "taskset": frozenset(),
    "timeout": frozenset("-s -k --signal --kill-after".split()),
    "xargs": frozenset("-a -d -E -e -I -i -L -l -n -P -s --arg-file --delimiter --max-args --max-procs "
                       "--replace --max-lines --max-chars".split()),
    "watch": frozenset("-n -d --interval".split()),
    "flock": frozenset("-w -E --timeout --conflict-exit-code".split()),
    "strace": frozenset("-e -o -p -s".split()),
    "chroot": frozenset(),
    "unbuffer": frozenset(),
}
# Wrappers whose first operand is not the command (a duration, a lock file, a root dir).
_LEADING_OPERAND = {"timeout": 1, "flock": 1, "chroot": 1, "taskset": 1, "chrt": 1}
# Short flags that take no value, per program: their clusters are merged and sorted in
# the canonical text, so `rm -r -f`, `rm -fr` and `rm --recursive --force` all read `rm -fr`.
FLAG_PROGRAMS: dict[str, dict[str, str]] = {
    "rm": {"recursive": "r", "force": "f", "dir": "d", "verbose": "v", "interactive": "i", "R": "r"},
    "cp": {"recursive": "r", "force": "f", "archive": "a", "R": "r"},
    "mv": {"force": "f"},
    "chmod": {"recursive": "R"},
    "chown": {"recursive": "R"},
    "chgrp": {"recursive": "R"},
    "ln": {"symbolic": "s", "force": "f"},
    "mkdir": {"parents": "p"},
    "rmdir": {"parents": "p"},
    "ls": {},
    "shred": {"remove": "u", "force": "f", "zero": "z"},
}
_PROGRAM = re.compile(r"^[A-Za-z0-9._+/-]+$")
_SHORT = re.compile(r"^-[A-Za-z0-9]+$")
_PRIVILEGED = frozenset({"sudo", "doas", "su", "chroot"})


@dataclass(frozen=True)
class Part:
    """One simple command as bash would run it."""

    program: str  # basename, or "" when it cannot be known
    argv: tuple[str, ...]
    canonical: str  # what `command` rules match
    kind: str
    opaque: str = ""  # why it cannot be read with confidence ("" when it can)


@dataclass(frozen=True)
class Analysis:
    line: str
    parts: tuple[Part, ...]
    kind: str
    confident: bool
    reasons: tuple[str, ...] = field(default=())


def rank(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS) - 1


def worst(kinds) -> str:
    return max(kinds, key=rank, default="read")


def analyse(line: str) -> Analysis:
    """Split `line` into the simple commands bash would run and classify each."""
    parts: list[Part] = []
    _line(line, parts, 0)
    if not parts:
        parts.append(Part("", (), "", "read"))  # an empty line or a comment runs nothing
    reasons = tuple(p.opaque for p in parts if p.opaque)
    return Analysis(line, tuple(parts), worst(p.kind for p in parts), not reasons, reasons)


def _opaque(parts: list[Part], text: str, why: str) -> None:
    parts.append(Part("", (), text, MOST_DANGEROUS, opaque=why))


def _line(text: str, parts: list[Part], depth: int) -> None:
    if depth > MAX_DEPTH:
        _opaque(parts, text, "nested too deep")
        return
    if "\x00" in text:
        _opaque(parts, text, "NUL byte in the command")
        return
    if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        return  # blank or comments only: nothing runs (bashlex refuses a lone comment)
    try:
        trees = bashlex.parse(text)
    except (bashlex.errors.ParsingError, NotImplementedError, IndexError, AttributeError, TypeError,
            ValueError, RecursionError, AssertionError) as exc:
        _opaque(parts, text, f"the shell parser could not read it ({type(exc).__name__})")
        return
    for tree in trees:
        _mark_ansi_quotes(tree, text)
        _walk(tree, parts, depth)


def _mark_ansi_quotes(tree, text: str) -> None:
    # bashlex does not decode $'\x72m' (bash does): such a word cannot be read with confidence.
    for node in [tree, *_descendants(tree)]:
        if node.kind == "word" and ("$'" in text[node.pos[0]:node.pos[1]] or '$"' in text[node.pos[0]:node.pos[1]]):
            node.ansi = True


def _walk(node, parts: list[Part], depth: int) -> None:
    kind = node.kind
    if kind == "command":
        _command(node, parts, depth)
        return
    if kind == "function":
        _opaque(parts, "function definition", "defines a shell function")
    for child in _children(node):
        _walk(child, parts, depth)


def _children(node):
    for attr in ("parts", "list"):
        for child in getattr(node, attr, None) or ():
            yield child
    for attr in ("command", "output", "heredoc"):
        child = getattr(node, attr, None)
        if isinstance(child, bashlex.ast.node):
            yield child


def _command(node, parts: list[Part], depth: int) -> None:
    words: list[str] = []
    dynamic: list[bool] = []
    redirect_kind = "read"
    for child in node.parts:
        if child.kind == "word":
            for sub in _children(child):  # $(...), `...`, <(...) run first, on their own
                _nested(sub, parts, depth)
            words.append(child.word)
            dynamic.append(_is_dynamic(child))
        elif child.kind == "redirect":
            target = getattr(child, "output", None)
            if isinstance(target, bashlex.ast.node):
                for sub in _children(target):
                    _nested(sub, parts, depth)
            if child.type in (">", ">>", ">|", "&>", "&>>", "<>") and not _devnull(target):
                redirect_kind = "write"
        elif child.kind == "assignment":
            for sub in _children(child):
                _nested(sub, parts, depth)
    if not words:
        return  # assignments only: nothing runs
    if any(dynamic):
        _opaque(parts, " ".join(words), "part of the command is expanded only when it runs ($...)")
        return
    _simple(words, parts, depth, redirect_kind)


def _nested(node, parts: list[Part], depth: int) -> None:
    if node.kind in ("commandsubstitution", "processsubstitution"):
        _walk(node.command, parts, depth + 1)
    else:
        for child in _children(node):
            _nested(child, parts, depth)


_DYNAMIC = frozenset({"parameter", "commandsubstitution", "processsubstitution"})
_BRACES = re.compile(r"\{[^{}]*(,|\.\.)[^{}]*\}")


def _is_dynamic(word) -> bool:
    """Whether bash computes this word when it runs: an expansion, or a brace list
    (`{-rf,/}` becomes two words), or a glob that could match an option-like file name."""
    if getattr(word, "ansi", False) or any(sub.kind in _DYNAMIC for sub in _descendants(word)):
        return True
    text = word.word
    return bool(_BRACES.search(text)) or (text.startswith("-") and any(c in text for c in "*?["))


def _descendants(node):
    for child in _children(node):
        yield child
        yield from _descendants(child)


def _devnull(target) -> bool:
    return getattr(target, "word", None) == "/dev/null"


def _simple(words: list[str], parts: list[Part], depth: int, floor: str) -> None:
    """words[0] is the program; unwrap wrappers, recurse into shells, classify the rest."""
    raw = words[0]
    if not _PROGRAM.match(raw) or raw.endswith("/"):
        _opaque(parts, " ".join(words), f"the program name {raw!r} is not a plain name")
        return
    program = raw.rsplit("/", 1)[-1]
    args = words[1:]
    if program in WRAPPERS:
        inner = _unwrap(program, args, parts, depth)
        kind = "admin" if program in _PRIVILEGED else "read"
        parts.append(Part(program, tuple(words), _canonical(program, args), worst((kind, floor))))
        if inner is None and program in ("sudo", "doas") and any(a in ("-s", "-i", "--shell", "--login")
                                                                  for a in args):
            parts.append(Part(program, tuple(words), _canonical(program, args), "exec",
                              opaque="an interactive root shell reads commands airlock cannot see"))
        elif inner is not None and program == "watch":
            _line(" ".join(inner), parts, depth + 1)  # watch hands its words to sh -c
        elif inner is not None:
            _simple(inner, parts, depth + 1, floor)
        return
    if program == "find":
        _find(args, parts, depth)
    if program in SHELLS:
        _shell(program, args, parts, depth, words)
        return
    if program == "eval":
        _line(" ".join(args), parts, depth + 1)
        return
    if program == "su":
        if "-c" not in args[:-1]:
            parts.append(Part(program, tuple(words), _canonical(program, args), "exec",
                              opaque="su opens a shell that reads commands airlock cannot see"))
            return
        _line(args[args.index("-c") + 1], parts, depth + 1)
    parts.append(Part(program, tuple(words), _canonical(program, args), worst((_kind(program, args), floor))))


def _kind(program: str, args: list[str]) -> str:
    if program in INTERPRETERS:
        return "exec"
    if program in ADMIN:
        return "admin"
    if program in WRITE:
        return "write"
    if program in READ:
        if program == "find" and any(a in ("-delete", "-fprint", "-fprintf", "-fls") for a in args):
            return "write"
        return "read"
    return MOST_DANGEROUS  # a program airlock does not know may do anything


def _unwrap(program: str, args: list[str], parts: list[Part], depth: int) -> list[str] | None:
    """The wrapped command's words, or None when the wrapper runs nothing else."""
    takes_value = WRAPPERS[program]
    skip_operands = _LEADING_OPERAND.get(program, 0)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if program == "env" and "=" in a and not a.startswith("-"):
            i += 1
            continue
        if program == "env" and (a in ("-S", "--split-string") or a.startswith("--split-string=")):
            # env -S splits its string into a command line of its own
            rest = a.partition("=")[2] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            _line(rest, parts, depth + 1)
            return None
        if a.startswith("-") and a != "-":
            name = a.split("=", 1)[0]
            i += 2 if name in takes_value and "=" not in a else 1
            if program in ("sudo", "su") and a in ("-s", "-i", "--shell", "--login"):
                pass  # a login shell with a following command: the command is next
            continue
        if program == "nice" and re.match(r"^-\d+$", a):
            i += 1
            continue
        break
    i += skip_operands
    if program == "sudo" and i < len(args) and "=" in args[i] and not args[i].startswith("-"):
        while i < len(args) and "=" in args[i]:
            i += 1
    rest = args[i:]
    return rest or None


def _find(args: list[str], parts: list[Part], depth: int) -> None:
    i = 0
    while i < len(args):
        if args[i] in ("-exec", "-execdir", "-ok", "-okdir"):
            end = i + 1
            while end < len(args) and args[end] not in (";", "+", "\\;"):
                end += 1
            inner = [a for a in args[i + 1:end] if a != "{}"]
            if inner:
                _simple(inner, parts, depth + 1, "read")
            i = end
        i += 1


def _shell(program: str, args: list[str], parts: list[Part], depth: int, words: list[str]) -> None:
    if program == "busybox" and args:
        _simple(args, parts, depth + 1, "read")
        return
    for i, a in enumerate(args):
        if a.startswith("-") and not a.startswith("--") and "c" in a[1:]:
            if i + 1 < len(args):
                parts.append(Part(program, tuple(words), _canonical(program, args), "read"))
                _line(args[i + 1], parts, depth + 1)
                return
            break
        if not a.startswith("-") and not a.startswith("+"):
            break
    # A shell reading commands from stdin, a here-document or a script file: unseen code.
    parts.append(Part(program, tuple(words), _canonical(program, args), "exec",
                      opaque="a shell reads commands airlock cannot see"))


def _canonical(program: str, args: list[str]) -> str:
    aliases = FLAG_PROGRAMS.get(program)
    if aliases is None:
        return " ".join([program, *args])
    flags: set[str] = set()
    longs: list[str] = []
    operands: list[str] = []
    ended = False
    for a in args:
        if ended or a == "-" or not a.startswith("-"):
            operands.append(a)
        elif a == "--":
            ended = True
        elif a.startswith("--"):
            name = a[2:].split("=", 1)[0]
            # GNU tools accept any unambiguous prefix of a long option (--rec for --recursive).
            hits = {letter for full, letter in aliases.items() if len(full) > 1 and len(name) >= 2
                    and full.startswith(name)}
            if len(hits) == 1:
                flags |= hits
            else:
                longs.append(a)
        elif _SHORT.match(a):
            flags.update(aliases.get(c, c) for c in a[1:])
        else:
            operands.append(a)
    head = [program] + (["-" + "".join(sorted(flags))] if flags else []) + sorted(longs)
    return " ".join(head + operands)
