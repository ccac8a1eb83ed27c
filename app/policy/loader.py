"""load_policy / dump_policy: YAML text <-> a validated PolicyDocument.

YAML is composed into nodes (not constructed) so every value keeps its line; the nodes
become plain values plus a {field path: line} table that the validators report against.
"""
from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any, Callable

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .entities import (validate_campaign, validate_connection, validate_grant, validate_service_account,
                       validate_user)
from .errors import Issues, Path, PolicyError, PolicyIssue
from .fields import check_keys, choice, items, mapping
from .model import DEFAULTS, PolicyDocument
from .rules import validate_rule
from .values import REGEX_PREFIX, is_pattern

TOP_KEYS = ("version", "default", "service_accounts", "users", "connections", "grants", "rules", "campaigns")
MAX_TEXT = 8 * 1024 * 1024
MAX_NODES = 1_000_000  # aliases can make a small text expand enormously
MAX_DEPTH = 64
_MERGE = "tag:yaml.org,2002:merge"


def load_policy(text: str, *, source: str = "policy.yaml") -> PolicyDocument:
    """Parse and validate a policy file; raises PolicyError listing every problem."""
    if len(text) > MAX_TEXT:
        raise PolicyError([PolicyIssue(1, "", f"policy is longer than {MAX_TEXT} characters")], source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        column = f" at column {mark.column + 1}" if mark else ""
        raise PolicyError([PolicyIssue(line, "", f"invalid YAML{column}: {exc.problem or exc}")], source) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise PolicyError([PolicyIssue(1, "", f"invalid YAML: {exc}")], source) from None
    iss = Issues({(): 1}, source)
    if node is None:
        iss.error((), "policy is empty")
        iss.raise_if_any()
    data = _Plain(iss).convert(node, ())
    return document_from_data(iss, data)


def line_of(text: str, path: tuple[str | int, ...]) -> int | None:
    """The line of a field of a policy file, e.g. ("connections", 1, "password"); None if absent."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for step in path:
        if isinstance(node, MappingNode) and isinstance(step, str):
            found = next(((k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == step), None)
            if found is None:
                return line
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def document_from_dict(data: dict[str, Any], source: str = "policy") -> PolicyDocument:
    """Validate a policy given as plain values (e.g. JSON); errors carry line 0."""
    return document_from_data(Issues(source=source), data)


def dump_policy(doc: PolicyDocument) -> str:
    """YAML that load_policy reads back to an equal document."""
    return yaml.dump(doc.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _Dumper(yaml.SafeDumper):
    """Lists of scalars in flow style ([a, b]), as people write them by hand."""

    def represent_str(self, data: str) -> Node:  # type: ignore[override]
        # PyYAML writes NEL/LS/PS raw in single quotes and reads them back as a space.
        if any(c in data for c in "\r\x85\u2028\u2029"):
            return self.represent_scalar("tag:yaml.org,2002:str", data, style='"')
        return super().represent_str(data)

    def represent_list(self, data: list[Any]) -> Node:  # type: ignore[override]
        flow = all(isinstance(x, (str, int, float, bool)) for x in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(str, _Dumper.represent_str)


class _Plain:
    """YAML nodes -> plain values, recording the line of every field path."""

    def __init__(self, iss: Issues) -> None:
        self.iss = iss
        self.constructor = SafeConstructor()
        self.nodes = 0

    def convert(self, node: Node, path: Path) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or len(path) > MAX_DEPTH:
            raise PolicyError([PolicyIssue(self.iss.line(path), "", "policy is too large or too deeply nested")],
                              self.iss.source)
        if isinstance(node, ScalarNode):
            try:
                return self.constructor.construct_object(node, deep=True)
            except ConstructorError as exc:
                self.iss.error(path, f"unsupported value: {exc.problem}")
                return None
        if isinstance(node, SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                self.iss.lines.setdefault(path + (i,), item.start_mark.line + 1)
                out.append(self.convert(item, path + (i,)))
            return out
        assert isinstance(node, MappingNode)
        seen: set[str] = set()
        for key_node, _ in node.value:
            # PyYAML keeps the last of two equal keys without a word; that hides mistakes.
            if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE:
                if key_node.value in seen:
                    self.iss.error(path + (key_node.value,), "duplicate key", line=key_node.start_mark.line + 1)
                seen.add(key_node.value)
        try:
            self.constructor.flatten_mapping(node)  # resolve "<<: *anchor" merges
        except ConstructorError as exc:
            self.iss.error(path, f"bad merge: {exc.problem}")
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not (isinstance(key_node, ScalarNode) and key_node.tag == "tag:yaml.org,2002:str"):
                self.iss.error(path, f"key {getattr(key_node, 'value', '?')!r} must be a string (quote it)",
                               line=key_node.start_mark.line + 1)
                continue
            key = key_node.value
            self.iss.lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node, path + (key,))
        return result


def document_from_data(iss: Issues, data: object) -> PolicyDocument:
    d = mapping(iss, data, ())
    if d is None:
        iss.raise_if_any()  # mapping() recorded why
        return PolicyDocument()
    check_keys(iss, d, (), TOP_KEYS, required=("version",))
    if "version" in d and (d["version"] != 1 or isinstance(d["version"], bool)):
        iss.error(("version",), f"must be 1, not {d['version']!r}")

    def each(key: str, validate: Callable[[Issues, object, Path], Any]) -> list[tuple[Path, Any]]:
        out = [(path, validate(iss, item, path)) for path, item in items(iss, d, key)]
        return [(path, spec) for path, spec in out if spec is not None]

    sas = each("service_accounts", validate_service_account)
    users = each("users", validate_user)
    conns = each("connections", validate_connection)
    grants = each("grants", validate_grant)
    rules = each("rules", validate_rule)
    campaigns = each("campaigns", validate_campaign)

    _unique(iss, sas, "name", lambda s: s.name)
    _unique(iss, users, "email", lambda u: u.email.lower())
    _unique(iss, conns, "name", lambda c: c.name)
    _unique(iss, grants, "connection", lambda g: (g.service_account, g.connection), "duplicate grant")
    _unique(iss, rules, "name", lambda r: r.name)
    _unique(iss, campaigns, "name", lambda c: c.name)
    _check_references(iss, sas, conns, grants, rules, campaigns)
    default = choice(iss, d, "default", (), DEFAULTS, default="allow")
    iss.raise_if_any()
    return PolicyDocument(
        version=1,
        default=default,
        service_accounts=tuple(s for _, s in sas),
        users=tuple(u for _, u in users),
        connections=tuple(c for _, c in conns),
        grants=tuple(g for _, g in grants),
        rules=tuple(r for _, r in rules),
        campaigns=tuple(c for _, c in campaigns),
    )


def _unique(iss: Issues, specs: list[tuple[Path, Any]], field: str, key: Callable[[Any], object],
            message: str = "") -> None:
    first: dict[object, Path] = {}
    for path, spec in specs:
        k = key(spec)
        if k in first:
            where = iss.line(first[k])
            iss.error(path + (field,), (message or f"duplicate {field} {k!r}") + (f" (first at line {where})" if where else ""))
        else:
            first[k] = path


def _check_references(iss: Issues, sas: list, conns: list, grants: list, rules: list, campaigns: list) -> None:
    sa_names = {s.name for _, s in sas}
    by_conn = {c.name: c for _, c in conns}

    def known(path: Path, name: str, names: object, what: str) -> None:
        # Globs and regexes may legitimately match nothing yet; only exact names are checked.
        if name and not is_pattern(name) and name not in names:  # type: ignore[operator]
            iss.error(path, f"unknown {what} {name!r}")

    for path, g in grants:
        known(path + ("service_account",), g.service_account, sa_names, "service account")
        known(path + ("connection",), g.connection, by_conn, "connection")
    for path, r in rules:
        for key, names, what in (("connection", by_conn, "connection"), ("service_account", sa_names, "service account")):
            shown = "identity" if key == "service_account" and path + ("match", "identity") in iss.lines else key
            for i, name in enumerate(getattr(r.match, key)):
                # A lone string in the file has no [0] of its own.
                sub = (i,) if path + ("match", shown, i) in iss.lines or not iss.lines else ()
                known(path + ("match", shown) + sub, name, names, what)
    hosts: dict[str, tuple[str, Path]] = {}
    for path, c in conns:
        for i, host in enumerate(c.hosts):
            other = hosts.setdefault(host.lower(), (c.name, path))
            if other[0] != c.name:
                iss.error(path + ("hosts", i), f"host {host!r} is already used by connection {other[0]!r}")
    for path, camp in campaigns:
        for i, name in enumerate(camp.service_accounts):
            known(path + ("scope", "service_accounts", i), name, sa_names, "service account")
        for i, name in enumerate(camp.connections):
            known(path + ("scope", "connections", i), name, by_conn, "connection")
        if camp.reviewers == "owner":
            for name in sorted(by_conn):
                in_scope = not camp.connections or any(_name_matches(p, name) for p in camp.connections)
                if in_scope and not by_conn[name].owner:
                    iss.error(path + ("reviewers",), f"is owner, but connection {name!r} has no owner")


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith(REGEX_PREFIX):
        return re.search(pattern[len(REGEX_PREFIX):], name) is not None
    return fnmatchcase(name, pattern)
