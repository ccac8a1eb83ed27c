"""Scalar value syntaxes of the policy file: durations, timestamps, cron, secret
references, names, patterns, days and times of day. Each parser raises ValueError
with a message fit to show the user after the field path.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
import re
from datetime import date, datetime, timezone

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
NAME_HINT = "must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
GLOB_CHARS = frozenset("*?[")
REGEX_PREFIX = "regex:"

_DURATION_PART = re.compile(r"(\d+)([smhd])")
_DURATION_FULL = re.compile(r"^(?:\d+[smhd])+$")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: object) -> int:
    """Seconds in "60s", "5m", "1h", "14d", "1h30m", or an int (or digit string) of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 60s, 5m, 1h or 14d")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit():
            return int(text)
        if _DURATION_FULL.match(text):
            return sum(int(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
    raise ValueError(f"must be a duration such as 60s, 5m, 1h or 14d, not {value!r}")


def format_duration(seconds: int) -> str:
    """The shortest single-unit form that parse_duration reads back exactly."""
    if seconds == 0:
        return "0s"
    for unit, size in _UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_timestamp(value: object) -> datetime:
    """An aware UTC datetime from an ISO 8601 string, a datetime or a date.

    Naive values are taken as UTC; a bare date means its midnight UTC.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"must be an ISO 8601 timestamp such as 2027-01-31T00:00:00Z, not {value!r}") from None
    else:
        raise ValueError("must be an ISO 8601 timestamp such as 2027-01-31T00:00:00Z")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_timestamp(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# --- cron -----------------------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
_CRON_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering, 7 = sun too
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _CRON_DOW),
)


def _cron_value(text: str, lo: int, hi: int, names: tuple[str, ...], field: str) -> int:
    low = text.lower()
    if low in names:
        return names.index(low) + (1 if field == "month" else 0)
    if not text.isdigit():
        raise ValueError(f"cron {field}: {text!r} is not a number")
    number = int(text)
    if not lo <= number <= hi:
        raise ValueError(f"cron {field}: {number} is outside {lo}-{hi}")
    return number


def _cron_field(text: str, lo: int, hi: int, names: tuple[str, ...], field: str) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"cron {field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = (_cron_value(x, lo, hi, names, field) for x in (a, b))
            if start > end:
                raise ValueError(f"cron {field}: range {base!r} runs backwards")
        elif step_text:
            raise ValueError(f"cron {field}: a step needs '*' or a range, not {base!r}")
        else:
            start = end = _cron_value(base, lo, hi, names, field)
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expr: object) -> list[set[int]]:
    """Validate a 5-field crontab expression; the value sets of each field (Sunday is 0)."""
    if not isinstance(expr, str):
        raise ValueError("must be a cron expression such as '0 9 1 */3 *'")
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"cron expression must have 5 fields (minute hour day month weekday), not {len(parts)}")
    sets = [_cron_field(p, lo, hi, names, f) for p, (f, lo, hi, names) in zip(parts, _CRON_FIELDS)]
    if 7 in sets[4]:
        sets[4] = (sets[4] - {7}) | {0}
    return sets


def cron_to_apscheduler(expr: str) -> dict[str, str]:
    """CronTrigger(**kwargs) for a crontab expression.

    APScheduler 3 numbers weekdays from Monday=0, so `CronTrigger.from_crontab("0 9 * * 0")`
    fires on Mondays. Weekdays are therefore spelled out as names here.
    """
    sets = parse_cron(expr)
    minute, hour, day, month, dow = expr.split()
    if dow != "*":
        dow = ",".join(_CRON_DOW[d] for d in sorted(sets[4]))
    return {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": dow}


# --- days and times of day (rule time windows) -------------------------------------------

def parse_days(items: list[str]) -> tuple[str, ...]:
    """Expand "mon-fri" style ranges (wrapping, e.g. "fri-mon") to day names in week order."""
    days: set[int] = set()
    for item in items:
        low = item.strip().lower()
        a, sep, b = low.partition("-")
        for name in (a, b) if sep else (a,):
            if name not in DAY_NAMES:
                raise ValueError(f"unknown day {name!r}{did_you_mean(name, DAY_NAMES)} (use mon..sun or a range like mon-fri)")
        if sep:
            i, j = DAY_NAMES.index(a), DAY_NAMES.index(b)
            days.update((i + k) % 7 for k in range((j - i) % 7 + 1))
        else:
            days.add(DAY_NAMES.index(a))
    return tuple(DAY_NAMES[d] for d in sorted(days))


_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def parse_between(value: str) -> tuple[int, int]:
    """Minutes since midnight of "HH:MM-HH:MM"; the end may be 24:00; start > end wraps midnight."""
    a, sep, b = value.partition("-")
    if not sep:
        raise ValueError("must be a time range such as 09:00-17:00")
    mins = []
    for part, end in ((a.strip(), False), (b.strip(), True)):
        m = _CLOCK.match(part)
        if not m or int(m[2]) > 59 or int(m[1]) > 24 or (int(m[1]) == 24 and (m[2] != "00" or not end)):
            raise ValueError(f"{part!r} is not a time of day HH:MM")
        mins.append(int(m[1]) * 60 + int(m[2]))
    if mins[0] == mins[1]:
        raise ValueError("start and end must differ")
    return mins[0], mins[1]


def format_between(start: int, end: int) -> str:
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


# --- secrets, patterns, hints ---------------------------------------------------------

_SECRET_REF = re.compile(r"\$\{(env|file):([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def secret_refs(value: str) -> list[tuple[str, str]]:
    """The (kind, argument) of every ${env:NAME} / ${file:PATH} reference in value."""
    return [(m[1], m[2]) for m in _SECRET_REF.finditer(value)]


def check_secret_refs(value: str) -> None:
    """Every "${" must open a well-formed reference, so a typo never ships as a literal secret."""
    pos = value.find("${")
    while pos != -1:
        m = _SECRET_REF.match(value, pos)
        if not m:
            raise ValueError(f"bad secret reference at {value[pos:pos + 20]!r}: use ${{env:NAME}} or ${{file:/path}}")
        kind, arg = m[1], m[2]
        if kind == "env" and not _ENV_NAME.match(arg):
            raise ValueError(f"bad environment variable name {arg!r} in ${{env:...}}")
        if kind == "file" and (not arg.strip() or arg != arg.strip()):
            raise ValueError("${file:...} needs a path without surrounding spaces")
        pos = value.find("${", m.end())


def is_pattern(value: str) -> bool:
    """True when value is a glob or regex rather than an exact name."""
    return value.startswith(REGEX_PREFIX) or any(c in GLOB_CHARS for c in value)


def check_pattern(value: str) -> None:
    if value.startswith(REGEX_PREFIX):
        body = value[len(REGEX_PREFIX):]
        if not body:
            raise ValueError("empty regex")
        try:
            re.compile(body)
        except re.error as exc:
            raise ValueError(f"invalid regex {body!r}: {exc}") from None
    else:
        re.compile(fnmatch.translate(value))


def json_text(value: object) -> str:
    """How a JSON scalar is compared with a pattern: strings as-is, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def did_you_mean(word: str, choices: object) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)  # type: ignore[attr-defined]
    return f" (did you mean {close[0]!r}?)" if close else ""
