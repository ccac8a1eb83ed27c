"""compile_policy / evaluate: rules and grants -> a Verdict for one operation.

Speed comes from splitting each rule's conditions in two. The "static" ones (protocol,
connection, service account, groups, kind, method, host, attributes) depend on a few
low-cardinality values, so the rules that pass them are worked out once per distinct
combination and cached as a plan. Only path, command, tables, body and time are tested per
operation, and a plan without such conditions carries its finished Verdict.
"""
from __future__ import annotations

import heapq
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from app.bounded import BoundedCache
from app.types import MaskSpec, Operation, Principal, ReviewSpec, Verdict

from .matchers import BodyPath, PatternSet, TablePatterns, TimeMatcher
from .model import GrantSpec, ServiceAccountSpec
from .rules import Rule
from .values import REGEX_PREFIX, format_timestamp, is_pattern

NO_GRANT = "no-grant"
DEFAULT_RULE = "default"  # names the verdict of a connection's `default:` (reserved for rules)
MAX_PLANS = 8192
SQL_PROTOCOLS = frozenset({"postgres", "mysql"})
_MISSING = object()
Predicate = Callable[[Operation, datetime], bool]
# Match keys whose values are compared case-insensitively.
FOLDED = frozenset({"protocol", "kind", "method", "host", "tables", "attributes"})


def fold_path(path: str) -> str:
    """A path (or path pattern) as a case-insensitive server compares it: NFKC, then case
    folded. upper().lower() also merges the letters whose upper case is ASCII (the
    dotless i), and the dotted capital I folds to a plain i (its simple case mapping),
    as Windows-style comparisons do."""
    if path.isascii():
        return path.lower()
    return unicodedata.normalize("NFKC", path).upper().lower().replace("i\u0307", "i")


@dataclass(frozen=True, slots=True)
class ConnectionDefault:
    """What a granted operation that no allow, review or deny rule matches gets."""

    action: str = "allow"  # allow | review | deny
    approvers: tuple[str, ...] = ()  # review: approver groups; none = admins decide

    @classmethod
    def of(cls, action: str | None, owner: str | None = None) -> ConnectionDefault:
        """A connection's default; its reviews go to the owner group (`group:NAME`), else admins."""
        if action not in ("review", "deny"):
            return ALLOW_BY_DEFAULT
        group = owner[6:].strip() if owner and owner.startswith("group:") else ""
        return cls(action, (group,) if group and action == "review" else ())

    def verdict(self, connection: str, masks: tuple[MaskSpec, ...]) -> Verdict:
        if self.action == "deny":
            return Verdict("deny", rule=DEFAULT_RULE, message=f"no rule allows this on connection {connection!r}, "
                           "whose default is deny")
        if self.action == "review":
            return Verdict("review", rule=DEFAULT_RULE, masks=masks, review=ReviewSpec(groups=self.approvers),
                           message=f"no rule covers this on connection {connection!r}, whose default is review")
        return Verdict("allow", masks=masks)


ALLOW_BY_DEFAULT = ConnectionDefault()


class _CompiledRule:
    __slots__ = ("rule", "action", "static", "strings", "folded", "others", "dynamic", "needs_time", "verdict",
                 "mask", "review", "textual")

    def __init__(self, rule: Rule) -> None:
        m = rule.match
        self.rule = rule
        self.action = rule.action
        self.static: list[tuple[str, PatternSet]] = [
            (key, PatternSet(getattr(m, key), fold=key in FOLDED))
            for key in ("protocol", "connection", "service_account", "groups", "kind", "method", "host", "attributes")
            if getattr(m, key)
        ]
        # Per-operation string tests as (index into _strings(op), test): the hot loop stays flat.
        self.strings = tuple((i, PatternSet(getattr(m, key), fold=False).tester())
                             for i, key in enumerate(("path", "command")) if getattr(m, key))
        # The same tests for a connection whose paths are case-insensitive (the default):
        # the path is folded once per operation (_strings), the patterns here.
        self.folded = tuple((i, _folded_paths(m.path) if i == 0 else test) for i, test in self.strings)
        self.others: tuple[Predicate, ...] = tuple(_predicates(rule))
        self.dynamic = bool(self.strings or self.others)
        self.needs_time = m.time is not None
        # Tests something besides the static keys, tables and time: path, command (which
        # falls back to the operation's text) or body.
        self.textual = bool(self.strings or m.body)
        self.mask = self.review = self.verdict = None
        if rule.action == "deny":
            self.verdict = Verdict("deny", rule=rule.name, message=rule.message or f"denied by rule {rule.name}")
        elif rule.action == "mask":
            self.mask = MaskSpec(rule.fields, rule.detectors, rule.strategy, rule=rule.name,  # type: ignore[arg-type]
                                 unmasked_types=rule.unmasked_types)
        elif rule.action == "review" and rule.approvers is not None:
            self.review = ReviewSpec(groups=rule.approvers.groups, count=rule.approvers.count,
                                     hold_seconds=float(rule.hold), expires_after_seconds=float(rule.expires_after),
                                     slack=rule.slack, channel=rule.channel)

    def passes_static(self, values: dict[str, object]) -> bool:
        for key, patterns in self.static:
            value = values[key]
            if isinstance(value, (frozenset, set, tuple)):
                if not patterns.any(value):
                    return False
            elif not isinstance(value, str) or not patterns.match(value):
                return False
        return True


def _folded_paths(patterns: Sequence[str]) -> Callable[[str], object]:
    # The value arrives folded (_strings), so the set needs no fold of its own and keeps
    # its cheapest tester; a `regex:` pattern keeps its text and ignores case instead.
    folded = [f"{REGEX_PREFIX}(?i){p[len(REGEX_PREFIX):]}" if p.startswith(REGEX_PREFIX) else fold_path(p)
              for p in patterns]
    return PatternSet(folded, fold=False).tester()


def _predicates(rule: Rule) -> list[Predicate]:
    m = rule.match
    preds: list[Predicate] = []
    if m.tables:
        tables = TablePatterns(m.tables)
        # An HTTP path target folds (NFKC, case) like a `path` does; other targets keep their text.
        paths = TablePatterns([p if p.startswith(REGEX_PREFIX) else fold_path(p) for p in m.tables])

        def test_tables(op: Operation, now: datetime) -> bool:
            if op.protocol == "http":
                return paths.any(tuple(fold_path(t) if isinstance(t, str) else t for t in op.targets), False)
            return tables.any(op.targets, op.protocol in SQL_PROTOCOLS)

        preds.append(test_tables)
    for path, patterns in m.body:
        body = BodyPath(path, patterns)
        preds.append(lambda op, now, body=body: op.body is not None and body.match(op.body))  # type: ignore[misc]
    if m.time is not None:
        window = TimeMatcher(m.time)
        preds.append(lambda op, now: window.match(now))
    return preds


def _strings(op: Operation, fold: bool) -> tuple[object, object]:
    # A shell session may carry its input line in `text` with no `command`.
    path = op.path
    if fold and path is not None:
        path = path.lower() if path.isascii() else fold_path(path)
    return path, op.command if op.command is not None else op.text


def _hit(r: _CompiledRule, op: Operation, strings: tuple[object, object], now: datetime, fold: bool) -> bool:
    for i, test in (r.folded if fold else r.strings):
        value = strings[i]
        if not isinstance(value, str) or not test(value):
            return False
    for pred in r.others:
        if not pred(op, now):
            return False
    return True


class _Plan:
    """The rules that passed the static conditions for one key, by action, in file order."""

    __slots__ = ("denies", "reviews", "allows", "masks", "needs_time", "verdict", "textual", "fold", "default",
                 "connection")

    def __init__(self, rules: list[_CompiledRule], fold: bool = True, connection: str = "",
                 default: ConnectionDefault = ALLOW_BY_DEFAULT) -> None:
        self.fold = fold  # paths of this plan's connection compare case-insensitively
        self.connection, self.default = connection, default
        denies = [r for r in rules if r.action == "deny"]
        # Past the first deny that needs no per-operation test, no other deny can name the verdict.
        cut = next((i for i, r in enumerate(denies) if not r.dynamic), None)
        self.denies = tuple(denies if cut is None else denies[: cut + 1])
        self.reviews = tuple(r for r in rules if r.action == "review")
        self.allows = tuple(r for r in rules if r.action == "allow")
        self.masks = tuple(r for r in rules if r.action == "mask")
        self.needs_time = any(r.needs_time for r in rules)
        self.textual = any(r.textual for r in rules)
        self.verdict: Verdict | None = None
        if cut == 0:
            self.verdict = self.denies[0].verdict
        elif not any(r.dynamic for r in rules):
            self.verdict = self.decide(None, (None, None), None)  # type: ignore[arg-type]

    def decide(self, op: Operation, strings: tuple[object, object], now: datetime) -> Verdict:
        fold = self.fold
        for r in self.denies:
            if _hit(r, op, strings, now, fold):
                return r.verdict  # type: ignore[return-value]
        masks = tuple(r.mask for r in self.masks if _hit(r, op, strings, now, fold))  # type: ignore[misc]
        for r in self.reviews:
            if _hit(r, op, strings, now, fold):
                name = r.rule.name
                return Verdict("review", rule=name, message=r.rule.message or f"approval required by rule {name}",
                               masks=masks, review=r.review)
        for r in self.allows:
            if _hit(r, op, strings, now, fold):
                return Verdict("allow", rule=r.rule.name, masks=masks)
        return self.default.verdict(self.connection, masks)


class CompiledPolicy:
    """Rules and grants ready for `evaluate`. Immutable apart from its plan cache."""

    def __init__(self, rules: Sequence[Rule], grants: Sequence[GrantSpec],
                 service_accounts: Sequence[ServiceAccountSpec], version: int,
                 defaults: Mapping[str, ConnectionDefault] | None = None,
                 case_sensitive_paths: frozenset[str] = frozenset()) -> None:
        self.version = version
        self.case_sensitive_paths = case_sensitive_paths  # connections that opted out of folding
        self.defaults = dict(defaults or {})
        self.rules = tuple(rules)
        self.grants: dict[tuple[str, str], datetime | None] = {}
        for g in grants:
            key = (g.service_account, g.connection)
            old = self.grants.get(key, _MISSING)
            expires = None if g.expires is None else _aware(g.expires)  # a naive expiry would not compare
            # Two grants for one pair: the longer-lived one wins (None = standing).
            if old is _MISSING:
                self.grants[key] = expires
            elif old is not None:
                self.grants[key] = None if expires is None else max(old, expires)  # type: ignore[type-var]
        self.sa_groups = {s.name: frozenset(s.groups) for s in service_accounts}
        self._compiled = tuple(_CompiledRule(r) for r in rules if r.enabled)
        self._plans: BoundedCache[tuple[object, ...], _Plan] = BoundedCache(MAX_PLANS)
        # Rules naming exact connections and protocols are indexed by them, so building a plan
        # (on every cache miss, e.g. after a policy change) skips most rules without matching.
        self._by_connection: dict[str, list[int]] = {}
        self._any_connection: list[int] = []
        by_protocol: dict[str, set[int]] = {}
        any_protocol: set[int] = set()
        for i, r in enumerate(self._compiled):
            names, protocols = r.rule.match.connection, r.rule.match.protocol
            if not names or any(is_pattern(n) for n in names):
                self._any_connection.append(i)
            else:
                for name in dict.fromkeys(names):
                    self._by_connection.setdefault(name, []).append(i)
            if not protocols or any(is_pattern(p) for p in protocols):
                any_protocol.add(i)
            else:
                for protocol in protocols:
                    by_protocol.setdefault(protocol.lower(), set()).add(i)
        self._any_protocol = frozenset(any_protocol)
        self._by_protocol = {p: frozenset(s | any_protocol) for p, s in by_protocol.items()}

    def has_grant(self, service_account: str, connection: str, now: datetime | None = None) -> bool:
        expires = self.grants.get((service_account, connection), _MISSING)
        return expires is None or (expires is not _MISSING and _aware(now) < expires)  # type: ignore[operator]

    def depends_on_text(self, op: Operation, who: Principal) -> bool:
        """Whether `evaluate(self, op, who, now)` may depend on op.text, path, command or
        body. When it does not, the verdict is a function of who, the grant, the time and
        op's protocol, connection, kind, method, host, targets and attributes alone, so
        callers may share one verdict between operations that differ only in text."""
        if op.body is not None:
            return True
        if (who.service_account, op.connection) not in self.grants:
            return False  # no grant: denied whatever the text
        key = (op.protocol, op.connection, who.service_account, op.kind, op.method, op.host, who.groups,
               op.attributes)
        try:
            plan = self._plans.get(key) or self._plan(key)
        except TypeError:
            key = key[:6] + (frozenset(who.groups), frozenset(op.attributes))
            plan = self._plans.get(key) or self._plan(key)
        return plan.textual

    def _plan(self, key: tuple[object, ...]) -> _Plan:
        protocol, connection, sa, kind, method, host, groups, attributes = key
        values = {"protocol": protocol, "connection": connection, "service_account": sa, "kind": kind,
                  "method": method, "host": host, "attributes": attributes,
                  "groups": frozenset(groups) | self.sa_groups.get(sa, frozenset())}  # type: ignore[arg-type]
        ok = self._by_protocol.get(protocol.lower() if isinstance(protocol, str) else "", self._any_protocol)
        candidates = heapq.merge(self._by_connection.get(connection, ()), self._any_connection)  # type: ignore[call-overload]
        compiled = self._compiled
        plan = _Plan([compiled[i] for i in candidates if i in ok and compiled[i].passes_static(values)],
                     fold=protocol == "http" and connection not in self.case_sensitive_paths,
                     connection=connection if isinstance(connection, str) else "",
                     default=self._default(protocol, connection, kind))
        return self._plans.put(key, plan)

    def _default(self, protocol: object, connection: object, kind: object) -> ConnectionDefault:
        # Transaction control and ordinary session settings (BEGIN, COMMIT, SET
        # application_name: kind tcl) touch no data; holding them would hold every login
        # (startup parameters pass the gate as SETs) and every transaction boundary. The
        # settings that matter (role, encodings, ...) are dcl or admin, under the default.
        if kind == "tcl" and isinstance(protocol, str) and protocol.lower() in SQL_PROTOCOLS:
            return ALLOW_BY_DEFAULT
        return self.defaults.get(connection, ALLOW_BY_DEFAULT)  # type: ignore[arg-type]


def compile_policy(rules: Sequence[Rule], grants: Sequence[GrantSpec],
                   service_accounts: Sequence[ServiceAccountSpec] = (), version: int = 0,
                   defaults: Mapping[str, ConnectionDefault] | None = None,
                   case_sensitive_paths: frozenset[str] = frozenset()) -> CompiledPolicy:
    """`case_sensitive_paths`: connections whose `path` rules compare case and Unicode
    forms exactly (`path_case_sensitive: true`); every other one folds both.
    `defaults`: connection name -> its `default:` (absent: allow)."""
    return CompiledPolicy(rules, grants, service_accounts, version, defaults, frozenset(case_sensitive_paths))


def evaluate(policy: CompiledPolicy, op: Operation, who: Principal, now: datetime | None = None) -> Verdict:
    """The verdict for `op` by `who`: no grant -> deny; then deny > review > allow > the
    connection's default (allow unless set), masks add up."""
    sa = who.service_account
    expires = policy.grants.get((sa, op.connection), _MISSING)
    if expires is _MISSING:
        if not op.connection:
            return Verdict("deny", rule=NO_GRANT, message=f"no connection declares {_destination(op)}, so "
                           f"service account {sa!r} has no grant to reach it through airlock (an admin adds it "
                           "to the hosts of a connection and grants that connection)")
        return Verdict("deny", rule=NO_GRANT,
                       message=f"service account {sa!r} has no grant for connection {op.connection!r}")
    if expires is not None or now is not None:
        now = _aware(now)
        if expires is not None and now >= expires:  # type: ignore[operator]
            return Verdict("deny", rule=NO_GRANT, message=f"the grant of {sa!r} for connection "
                           f"{op.connection!r} expired at {format_timestamp(expires)}")  # type: ignore[arg-type]
    key = (op.protocol, op.connection, sa, op.kind, op.method, op.host, who.groups, op.attributes)
    try:
        plan = policy._plans.get(key) or policy._plan(key)
    except TypeError:  # a caller passed a mutable set; freeze it rather than fail
        key = key[:6] + (frozenset(who.groups), frozenset(op.attributes))
        plan = policy._plans.get(key) or policy._plan(key)
    if plan.verdict is not None:
        return plan.verdict
    if now is None and plan.needs_time:
        now = datetime.now(timezone.utc)
    return plan.decide(op, _strings(op, plan.fold), now)  # type: ignore[arg-type]


def _destination(op: Operation) -> str:
    """host:port of an operation no connection claims (the adapter's text is "METHOD URL")."""
    try:
        url = urlsplit(op.text.split(" ", 1)[1])
        port = url.port or {"https": 443, "http": 80}.get(url.scheme)
        host = url.hostname or op.host
    except (IndexError, ValueError):
        return repr(op.host or "this destination")
    if not host:
        return "this destination"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
