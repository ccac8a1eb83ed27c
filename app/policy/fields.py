"""Typed field readers over plain parsed YAML/JSON values.

Each reader records an error (with the field's path) and returns a fallback instead of
raising, so validation goes on and reports every problem at once.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from .errors import Issues, Path
from .values import did_you_mean, parse_duration

MISSING: Any = object()


def mapping(iss: Issues, value: object, path: Path, what: str = "a mapping") -> dict[str, Any] | None:
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return value
        iss.error(path, "keys must be strings")
        return None
    iss.error(path, f"must be {what}, not {type_name(value)}")
    return None


def check_keys(iss: Issues, d: dict[str, Any], path: Path, allowed: Iterable[str],
               required: Iterable[str] = ()) -> None:
    allowed = tuple(allowed)
    for key in d:
        if key not in allowed:
            iss.error(path + (key,), f"unknown key{did_you_mean(key, allowed)}")
    for key in required:
        if key not in d:
            iss.error(path + (key,), "is required")


def string(iss: Issues, d: dict[str, Any], key: str, path: Path, default: Any = MISSING,
           check: Callable[[str], None] | None = None, empty: bool = False) -> Any:
    """d[key] as a string; `check` raises ValueError to reject it."""
    if key not in d:
        return "" if default is MISSING else default
    value = d[key]
    if not isinstance(value, str):
        iss.error(path + (key,), f"must be a string, not {type_name(value)}")
        return "" if default is MISSING else default
    if not empty and not value.strip():
        iss.error(path + (key,), "must not be empty")
        return value
    if check is not None:
        try:
            check(value)
        except ValueError as exc:
            iss.error(path + (key,), str(exc))
    return value


def strings(iss: Issues, d: dict[str, Any], key: str, path: Path,
            check: Callable[[str], None] | None = None, single: bool = True) -> tuple[str, ...]:
    """d[key] as a tuple of non-empty strings; a lone string counts as a list of one."""
    if key not in d:
        return ()
    value = d[key]
    if isinstance(value, str) and single:
        items, paths = [value], [path + (key,)]
    elif isinstance(value, list):
        items, paths = value, [path + (key, i) for i in range(len(value))]
        if not value:
            iss.error(path + (key,), "must not be an empty list")
    else:
        iss.error(path + (key,), f"must be {'a string or ' if single else ''}a list of strings, not {type_name(value)}")
        return ()
    out = []
    for item, item_path in zip(items, paths):
        if not isinstance(item, str) or not item.strip():
            iss.error(item_path, "must be a non-empty string")
            continue
        if check is not None:
            try:
                check(item)
            except ValueError as exc:
                iss.error(item_path, str(exc))
                continue
        out.append(item)
    return tuple(out)


def boolean(iss: Issues, d: dict[str, Any], key: str, path: Path, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        iss.error(path + (key,), "must be true or false")
        return default
    return value


def positive_int(iss: Issues, d: dict[str, Any], key: str, path: Path, default: int) -> int:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        iss.error(path + (key,), "must be a positive integer")
        return default
    return value


def duration(iss: Issues, d: dict[str, Any], key: str, path: Path, default: Any,
             positive: bool = True) -> Any:
    if key not in d:
        return default
    try:
        seconds = parse_duration(d[key])
    except ValueError as exc:
        iss.error(path + (key,), str(exc))
        return default
    if positive and seconds == 0:
        iss.error(path + (key,), "must be longer than zero")
    return seconds


def choice(iss: Issues, d: dict[str, Any], key: str, path: Path, options: tuple[str, ...],
           default: Any = MISSING) -> Any:
    if key not in d:
        return default
    value = d[key]
    if value not in options:
        iss.error(path + (key,), f"must be one of {', '.join(options)}, not {value!r}{did_you_mean(value, options)}")
        return default
    return value


def items(iss: Issues, data: dict[str, Any], key: str) -> list[tuple[Path, Any]]:
    """The entries of a top-level list, with their paths."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        iss.error((key,), f"must be a list, not {type_name(value)}")
        return []
    return [((key, i), item) for i, item in enumerate(value)]


def type_name(value: object) -> str:
    if value is None:
        return "empty"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
