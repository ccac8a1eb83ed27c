"""Rules, and the validation of rules and their match conditions from plain (parsed)
values. The rule lives here, not in model.py, so that `Rule.from_dict` and the
validation it calls sit in one module above the model they build on."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from app.masking import DETECTORS

from . import fields as f
from .errors import Issues, Path
from .model import (ACTIONS, DEFAULT_EXPIRES_AFTER, DEFAULT_HOLD, STRATEGIES, Approvers, Match, TimeWindow,
                    put_set)
from .values import (NAME_HINT, NAME_RE, check_pattern, did_you_mean, format_duration, is_pattern, json_text,
                     parse_between, parse_days)

KNOWN_DETECTORS = frozenset(DETECTORS)
PROTOCOLS = ("http", "postgres", "mysql", "ssh")
KNOWN_KINDS = ("read", "tcl", "write", "ddl", "dcl", "admin", "exec", "shell")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
# Names of verdicts no rule gave: a missing grant, and a connection's `default:`.
RESERVED_RULE_NAMES = ("no-grant", "default")

RULE_KEYS = ("name", "description", "enabled", "match", "action", "message", "approvers", "hold",
             "expires_after", "slack", "channel", "fields", "detectors", "strategy", "unmasked_types")
REVIEW_ONLY = ("approvers", "hold", "expires_after", "slack", "channel")
MASK_ONLY = ("fields", "detectors", "strategy", "unmasked_types")
ALIASES = {"identity": "service_account", "targets": "tables"}
MATCH_KEYS = ("protocol", "connection", "service_account", "identity", "groups", "kind", "method",
              "host", "path", "command", "tables", "targets", "attributes", "time", "body")
# A JSON path: $ then .name, .*, [N] or [*] steps.
_BODY_PATH = re.compile(r"^\$(?:\.[^.\[\]\s]+|\[\d+\]|\[\*\])+$")


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match = Match()
    action: str = "deny"
    message: str = ""
    approvers: Approvers | None = None  # review only
    hold: int = DEFAULT_HOLD  # seconds an operation is held waiting for a decision
    expires_after: int = DEFAULT_EXPIRES_AFTER  # seconds a review stays open / an approval valid
    slack: bool = True
    channel: str | None = None
    fields: tuple[str, ...] = ()  # mask only
    detectors: tuple[str, ...] = ()  # mask only
    strategy: str = "redact"  # mask only
    # mask only: media types (globs) let through unmasked when a body cannot be inspected
    unmasked_types: tuple[str, ...] = ()
    description: str = ""
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        put_set(d, "description", self.description)
        if not self.enabled:
            d["enabled"] = False
        d["match"] = self.match.to_dict()
        d["action"] = self.action
        put_set(d, "message", self.message)
        if self.action == "review" and self.approvers is not None:
            d["approvers"] = {"groups": list(self.approvers.groups), "count": self.approvers.count}
            if self.hold != DEFAULT_HOLD:
                d["hold"] = format_duration(self.hold)
            if self.expires_after != DEFAULT_EXPIRES_AFTER:
                d["expires_after"] = format_duration(self.expires_after)
            if not self.slack:
                d["slack"] = False
            put_set(d, "channel", self.channel)
        if self.action == "mask":
            put_set(d, "fields", list(self.fields))
            put_set(d, "detectors", list(self.detectors))
            d["strategy"] = self.strategy
            put_set(d, "unmasked_types", list(self.unmasked_types))
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rule:
        """Validate a rule dict (e.g. from the store's JSON); raises PolicyError with line 0."""
        return rule_from_dict(data)


def rule_from_dict(data: dict[str, Any]) -> Rule:
    iss = Issues(source="rule")
    rule = validate_rule(iss, data, ())
    iss.raise_if_any()
    assert rule is not None  # validate_rule records an error whenever it returns None
    return rule


def validate_rule(iss: Issues, value: object, path: Path) -> Rule | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    f.check_keys(iss, d, path, RULE_KEYS, required=("name", "match", "action"))
    name = f.string(iss, d, "name", path, check=_check_rule_name)
    action = f.choice(iss, d, "action", path, ACTIONS, default="deny")
    for key in REVIEW_ONLY if action != "review" else ():
        if key in d:
            iss.error(path + (key,), "is only valid with action: review")
    for key in MASK_ONLY if action != "mask" else ():
        if key in d:
            iss.error(path + (key,), "is only valid with action: mask")
    match = validate_match(iss, d.get("match"), path + ("match",)) if "match" in d else Match()
    approvers = None
    if action == "review":
        if "approvers" not in d:
            iss.error(path + ("approvers",), "is required with action: review")
        else:
            approvers = _approvers(iss, d["approvers"], path + ("approvers",))
    detectors: tuple[str, ...] = ()
    if action == "mask":
        detectors = f.strings(iss, d, "detectors", path, check=lambda n: _check_detector(n, KNOWN_DETECTORS))
        if "fields" not in d and "detectors" not in d:
            iss.error(path, "a mask rule needs fields or detectors")
    return Rule(
        name=name,
        match=match or Match(),
        action=action,
        message=f.string(iss, d, "message", path, empty=True),
        approvers=approvers,
        hold=f.duration(iss, d, "hold", path, DEFAULT_HOLD, positive=False),
        expires_after=f.duration(iss, d, "expires_after", path, DEFAULT_EXPIRES_AFTER),
        slack=f.boolean(iss, d, "slack", path, True),
        channel=f.string(iss, d, "channel", path, default=None),
        fields=f.strings(iss, d, "fields", path),
        detectors=detectors,
        strategy=f.choice(iss, d, "strategy", path, STRATEGIES, default="redact"),
        unmasked_types=f.strings(iss, d, "unmasked_types", path, check=_check_media_type),
        description=f.string(iss, d, "description", path, empty=True),
        enabled=f.boolean(iss, d, "enabled", path, True),
    )


def _check_media_type(value: str) -> None:
    if not re.match(r"^[a-z0-9*][a-z0-9!#$&^_.+*-]*/[a-z0-9*][a-z0-9!#$&^_.+*-]*$", value):
        raise ValueError(f"must be a media type such as image/png or image/*, not {value!r}")


def _check_rule_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ValueError(NAME_HINT)
    if name in RESERVED_RULE_NAMES:
        raise ValueError(f"{name!r} is reserved: it names the verdict of a missing grant or of a connection's default")


def _check_detector(name: str, known: frozenset[str]) -> None:
    if name not in known:
        raise ValueError(f"unknown detector {name!r}{did_you_mean(name, known)}; known: {', '.join(sorted(known))}")


def _approvers(iss: Issues, value: object, path: Path) -> Approvers | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    f.check_keys(iss, d, path, ("groups", "count"), required=("groups",))
    return Approvers(groups=f.strings(iss, d, "groups", path), count=f.positive_int(iss, d, "count", path, 1))


def validate_match(iss: Issues, value: object, path: Path) -> Match | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    f.check_keys(iss, d, path, MATCH_KEYS)
    for alias, key in ALIASES.items():
        if alias in d and key in d:
            iss.error(path + (alias,), f"give either {alias} or {key}, not both")
    lists: dict[str, tuple[str, ...]] = {}
    for key in MATCH_KEYS:
        if key in ("time", "body") or key not in d:
            continue
        lists[ALIASES.get(key, key)] = f.strings(iss, d, key, path, check=_value_check(key))
    time = _time(iss, d["time"], path + ("time",)) if "time" in d else None
    body = _body(iss, d["body"], path + ("body",)) if "body" in d else ()
    return Match(time=time, body=body, **lists)


def _value_check(key: str):  # type: ignore[no-untyped-def]
    """Exact values of closed vocabularies are checked, so a typo cannot silently never match."""
    vocab = {"protocol": PROTOCOLS, "kind": KNOWN_KINDS, "method": HTTP_METHODS}.get(key)

    def check(value: str) -> None:
        check_pattern(value)
        if vocab and not is_pattern(value):
            norm = value.upper() if key == "method" else value.lower()
            if norm not in vocab:
                raise ValueError(f"unknown {key} {value!r}{did_you_mean(norm, vocab)}; known: {', '.join(vocab)}")

    return check


def _time(iss: Issues, value: object, path: Path) -> TimeWindow | None:
    d = f.mapping(iss, value, path)
    if d is None:
        return None
    f.check_keys(iss, d, path, ("days", "between", "tz"))
    if "days" not in d and "between" not in d:
        iss.error(path, "needs days or between")
    days: tuple[str, ...] = ()
    raw_days = f.strings(iss, d, "days", path)
    if raw_days:
        try:
            days = parse_days(list(raw_days))
        except ValueError as exc:
            iss.error(path + ("days",), str(exc))
    between = None
    text = f.string(iss, d, "between", path, default=None)
    if isinstance(text, str):
        try:
            between = parse_between(text)
        except ValueError as exc:
            iss.error(path + ("between",), str(exc))
    tz = f.string(iss, d, "tz", path, default="UTC", check=_check_tz)
    return TimeWindow(days=days, between=between, tz=tz if isinstance(tz, str) else "UTC")


def _check_tz(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        raise ValueError(f"unknown time zone {name!r} (use UTC or an IANA name like Europe/Paris)") from None


def _body(iss: Issues, value: object, path: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    d = f.mapping(iss, value, path, 'a mapping of JSON paths to patterns, e.g. {"$.amount": "1*"}')
    if d is None:
        return ()
    if not d:
        iss.error(path, "must not be empty")
    out = []
    for key, raw in d.items():
        if not _BODY_PATH.match(key):
            iss.error(path + (key,), "must be a JSON path like $.field, $.items[0].id or $.items[*].sku")
            continue
        values = raw if isinstance(raw, list) else [raw]
        if not values or any(isinstance(v, (dict, list)) for v in values):
            iss.error(path + (key,), "must be a pattern, a scalar, or a non-empty list of them")
            continue
        # Non-string scalars compare as their JSON text, so `true` and `"true"` are one pattern.
        patterns = tuple(json_text(v) for v in values)
        for i, pattern in enumerate(patterns):
            try:
                check_pattern(pattern)
            except ValueError as exc:
                iss.error(path + (key,) + ((i,) if isinstance(raw, list) else ()), str(exc))
        out.append((key, patterns))
    return tuple(out)
