"""Policy errors that point at a line and a field path, and the collector that builds them.

Every validator records problems here instead of raising, so one `airlock apply` shows
every mistake in the file at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

Path = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MAX_ERRORS = 500


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem: 1-based line (0 when unknown, e.g. a dict from the store), field path, message."""

    line: int
    path: str
    message: str

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(ValueError):
    """The policy is invalid; `.errors` lists every problem found, in line order."""

    def __init__(self, errors: Iterable[PolicyIssue], source: str = "policy.yaml") -> None:
        self.errors: list[PolicyIssue] = sorted(errors, key=lambda i: (i.line, i.path))
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(issue.format(self.source) for issue in self.errors)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            # Body paths such as "$.a.b" would be unreadable joined with dots.
            out += '["' + part.replace('"', '\\"') + '"]'
    return out


class Issues:
    """Collects PolicyIssues; knows the line of every field path when built from YAML."""

    def __init__(self, lines: dict[Path, int] | None = None, source: str = "policy.yaml") -> None:
        self.lines = lines if lines is not None else {}
        self.source = source
        self.errors: list[PolicyIssue] = []
        self.dropped = 0

    def line(self, path: Path) -> int:
        # A missing key has no line of its own: report the closest enclosing one.
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 0)

    def error(self, path: Path, message: str, line: int | None = None) -> None:
        if len(self.errors) >= MAX_ERRORS:
            self.dropped += 1
            return
        self.errors.append(PolicyIssue(self.line(path) if line is None else line, format_path(path), message))

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        errors = list(self.errors)
        if self.dropped:
            last = max(e.line for e in errors)
            errors.append(PolicyIssue(last, "", f"... and {self.dropped} more errors"))
        raise PolicyError(errors, self.source)
