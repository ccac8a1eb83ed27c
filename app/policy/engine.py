"""compile_policy / evaluate: rules and grants -> a Verdict for one operation.

Speed comes from splitting each rule's conditions in two. The "static" ones (protocol,
connection, service account, groups, kind, method, host, attributes) depend on a few
low-cardinality values, so the rules that pass them are worked out once per distinct
combination and cached as a plan. Only path, command, tables, body and time are tested per
operation, and a plan without such conditions carries its finished Verdict.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Sequence

from app.types import MaskSpec, Operation, Principal, ReviewSpec, Verdict

from .matchers import BodyPath, PatternSet, TablePatterns, TimeMatcher
from .model import GrantSpec, Rule, ServiceAccountSpec
from .values import format_timestamp

NO_GRANT = "no-grant"
MAX_PLANS = 8192
SQL_PROTOCOLS = frozenset({"postgres", "mysql"})
_MISSING = object()
Predicate = Callable[[Operation, datetime], bool]
# Match keys whose values are compared case-insensitively.
FOLDED = frozenset({"protocol", "kind", "method", "host", "tables", "attributes"})


class _CompiledRule:
    __slots__ = ("rule", "action", "static", "dynamic", "needs_time", "verdict", "mask", "review")

    def __init__(self, rule: Rule) -> None:
        m = rule.match
        self.rule = rule
        self.action = rule.action
        self.static: list[tuple[str, PatternSet]] = [
            (key, PatternSet(getattr(m, key), fold=key in FOLDED))
            for key in ("protocol", "connection", "service_account", "groups", "kind", "method", "host", "attributes")
            if getattr(m, key)
        ]
        self.dynamic: tuple[Predicate, ...] = tuple(_dynamic(rule))
        self.needs_time = m.time is not None
        self.mask = self.review = self.verdict = None
        if rule.action == "deny":
            self.verdict = Verdict("deny", rule=rule.name, message=rule.message or f"denied by rule {rule.name}")
        elif rule.action == "mask":
            self.mask = MaskSpec(rule.fields, rule.detectors, rule.strategy, rule=rule.name)  # type: ignore[arg-type]
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


def _dynamic(rule: Rule) -> list[Predicate]:
    m = rule.match
    preds: list[Predicate] = []
    if m.path:
        paths = PatternSet(m.path, fold=False)
        preds.append(lambda op, now: isinstance(op.path, str) and paths.match(op.path))
    if m.command:
        commands = PatternSet(m.command, fold=False)
        # A shell session may carry its input line in `text` with no `command`.
        preds.append(lambda op, now: isinstance(c := op.command if op.command is not None else op.text, str)
                     and commands.match(c))
    if m.tables:
        tables = TablePatterns(m.tables)
        preds.append(lambda op, now: tables.any(op.targets, op.protocol in SQL_PROTOCOLS))
    for path, patterns in m.body:
        body = BodyPath(path, patterns)
        preds.append(lambda op, now, body=body: op.body is not None and body.match(op.body))  # type: ignore[misc]
    if m.time is not None:
        window = TimeMatcher(m.time)
        preds.append(lambda op, now: window.match(now))
    return preds


class _Plan:
    __slots__ = ("rules", "needs_time", "verdict")

    def __init__(self, rules: list[_CompiledRule]) -> None:
        # Past the first deny that needs no per-operation test nothing can change the verdict.
        for i, r in enumerate(rules):
            if r.action == "deny" and not r.dynamic:
                rules = rules[: i + 1]
                break
        self.rules = tuple(rules)
        self.needs_time = any(r.needs_time for r in rules)
        self.verdict = _decide(rules) if not any(r.dynamic for r in rules) else None


def _decide(matched: Sequence[_CompiledRule]) -> Verdict:
    review: _CompiledRule | None = None
    allow: _CompiledRule | None = None
    masks: list[MaskSpec] = []
    for r in matched:
        if r.action == "deny":
            return r.verdict  # type: ignore[return-value]
        if r.action == "review":
            review = review or r
        elif r.action == "allow":
            allow = allow or r
        elif r.mask is not None:
            masks.append(r.mask)
    if review is not None:
        name = review.rule.name
        return Verdict("review", rule=name, message=review.rule.message or f"approval required by rule {name}",
                       masks=tuple(masks), review=review.review)
    return Verdict("allow", rule=allow.rule.name if allow else None, masks=tuple(masks))


class CompiledPolicy:
    """Rules and grants ready for `evaluate`. Immutable apart from its plan cache."""

    def __init__(self, rules: Sequence[Rule], grants: Sequence[GrantSpec],
                 service_accounts: Sequence[ServiceAccountSpec], version: int) -> None:
        self.version = version
        self.rules = tuple(rules)
        self.grants: dict[tuple[str, str], datetime | None] = {}
        for g in grants:
            key = (g.service_account, g.connection)
            old = self.grants.get(key, _MISSING)
            # Two grants for one pair: the longer-lived one wins (None = standing).
            if old is _MISSING:
                self.grants[key] = g.expires
            elif old is not None:
                self.grants[key] = None if g.expires is None else max(old, g.expires)  # type: ignore[type-var]
        self.sa_groups = {s.name: frozenset(s.groups) for s in service_accounts}
        self._compiled = tuple(_CompiledRule(r) for r in rules if r.enabled)
        self._plans: dict[tuple[object, ...], _Plan] = {}

    def has_grant(self, service_account: str, connection: str, now: datetime | None = None) -> bool:
        expires = self.grants.get((service_account, connection), _MISSING)
        return expires is None or (expires is not _MISSING and _aware(now) < expires)  # type: ignore[operator]

    def _plan(self, key: tuple[object, ...]) -> _Plan:
        protocol, connection, sa, kind, method, host, groups, attributes = key
        values = {"protocol": protocol, "connection": connection, "service_account": sa, "kind": kind,
                  "method": method, "host": host, "attributes": attributes,
                  "groups": frozenset(groups) | self.sa_groups.get(sa, frozenset())}  # type: ignore[arg-type]
        plan = _Plan([r for r in self._compiled if r.passes_static(values)])
        if len(self._plans) >= MAX_PLANS:
            self._plans.clear()  # bounded memory; plans are cheap to rebuild
        self._plans[key] = plan
        return plan


def compile_policy(rules: Sequence[Rule], grants: Sequence[GrantSpec],
                   service_accounts: Sequence[ServiceAccountSpec] = (), version: int = 0) -> CompiledPolicy:
    return CompiledPolicy(rules, grants, service_accounts, version)


def evaluate(policy: CompiledPolicy, op: Operation, who: Principal, now: datetime | None = None) -> Verdict:
    """The verdict for `op` by `who`: no grant -> deny; then deny > review > allow, masks add up."""
    sa = who.service_account
    expires = policy.grants.get((sa, op.connection), _MISSING)
    if expires is _MISSING:
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
    return _decide([r for r in plan.rules if all(p(op, now) for p in r.dynamic)])  # type: ignore[arg-type]


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
