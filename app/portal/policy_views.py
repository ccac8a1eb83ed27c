"""Rules and the policy as YAML: view, edit one rule, apply a whole file, export."""
from __future__ import annotations

import yaml
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from app import audit
from app.db import session_scope
from app.inventory import export_policy
from app.models import Rule, utcnow
from app.policy import PolicyError, Rule as RuleSpec, dump_policy, load_policy
from app.changes import ChangeError, apply_document, edit, policy_problems, replace_item
from app.portal.security import ADMIN, INVENTORY_READ, requires
from app.versions import current_version

bp = Blueprint("policy", __name__)

RULE_TEMPLATE = """name: new-rule
description: ""
match:
  protocol: [postgres]
  kind: [write]
action: review
approvers: {groups: [dba], count: 1}
"""


def _rule_summary(body: dict) -> str:
    parts = []
    for key, value in (body.get("match") or {}).items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key}: {value}")
    return "; ".join(parts) or "everything"


@bp.get("/policy")
@requires(*INVENTORY_READ)
def index():
    with session_scope() as s:
        rules = s.scalars(select(Rule).order_by(Rule.position, Rule.id)).all()
        version = current_version(s)
    return render_template("policy/index.html", rules=rules, version=version, summary=_rule_summary)


def _dump_rule(body: dict) -> str:
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)


@bp.get("/policy/rules/new")
@requires(*ADMIN)
def new_rule():
    return render_template("policy/rule_form.html", original=None, text=RULE_TEMPLATE, problems=[])


@bp.get("/policy/rules/<name>")
@requires(*INVENTORY_READ)
def rule(name: str):
    with session_scope() as s:
        row = s.scalars(select(Rule).where(Rule.name == name)).first()
        if row is None:
            abort(404)
        text = _dump_rule(row.body)
    return render_template("policy/rule_form.html", original=name, text=text, problems=[])


@bp.post("/policy/rules")
@requires(*ADMIN)
def save_rule():
    original = request.form.get("original") or None
    text = request.form.get("text", "")
    try:
        data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ChangeError("the rule must be a YAML mapping with name, match and action")
        RuleSpec.from_dict(data)  # the rule on its own first: clearer messages
        with session_scope() as s:
            report = edit(s, current_user.email, lambda d: replace_item(d, "rules", "name", original, data))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problems = [f"invalid YAML: {where}{getattr(exc, 'problem', None) or exc}"]
    except PolicyError as exc:
        problems = policy_problems(exc)
    except ChangeError as exc:
        problems = exc.problems
    else:
        flash(f"Rule {data['name']} saved ({report.summary()}).", "ok")
        return redirect(url_for(".index"))
    return render_template("policy/rule_form.html", original=original, text=text, problems=problems), 400


@bp.post("/policy/rules/<name>/delete")
@requires(*ADMIN)
def delete_rule(name: str):
    try:
        with session_scope() as s:
            edit(s, current_user.email, lambda d: replace_item(d, "rules", "name", name, None))
    except ChangeError as exc:
        flash("; ".join(exc.problems), "error")
    else:
        flash(f"Rule {name} deleted.", "ok")
    return redirect(url_for(".index"))


@bp.post("/policy/rules/<name>/move")
@requires(*ADMIN)
def move_rule(name: str):
    step = -1 if request.form.get("direction") == "up" else 1

    def mutate(data):
        rules = list(data.get("rules") or [])
        i = next((n for n, r in enumerate(rules) if r.get("name") == name), None)
        if i is None:
            raise ChangeError(f"rule {name!r} does not exist")
        j = i + step
        if 0 <= j < len(rules):
            rules[i], rules[j] = rules[j], rules[i]
        data["rules"] = rules

    try:
        with session_scope() as s:
            edit(s, current_user.email, mutate)
    except ChangeError as exc:
        flash("; ".join(exc.problems), "error")
    return redirect(url_for(".index"))


@bp.get("/policy/export.yaml")
@requires(*INVENTORY_READ)
def export_yaml():
    with session_scope() as s:
        text = dump_policy(export_policy(s))
        audit.append(s, current_user.email, "policy.export", "", {"bytes": len(text)})
    header = ("# airlock policy exported " + utcnow().strftime("%Y-%m-%d %H:%M:%S UTC") + ".\n"
              "# Secrets are not exported: set each ${env:AIRLOCK_...} variable before `airlock apply`.\n")
    return Response(header + text, mimetype="application/yaml",
                    headers={"Content-Disposition": 'attachment; filename="airlock-policy.yaml"'})


@bp.route("/policy/yaml", methods=["GET", "POST"])
@requires(*INVENTORY_READ)
def yaml_page():
    problems: list[str] = []
    report = None
    if request.method == "POST":
        if not current_user.can(ADMIN):
            abort(403)
        text = request.form.get("text", "")
        check_only = request.form.get("action") == "check"
        try:
            doc = load_policy(text, source="policy.yaml")
            if check_only:
                flash("The policy is valid. Nothing was changed.", "ok")
            else:
                with session_scope() as s:
                    report = apply_document(s, doc, actor=current_user.email)
                flash(f"Applied: {report.summary()}.", "ok")
                return redirect(url_for(".yaml_page"))
        except PolicyError as exc:
            problems = policy_problems(exc)
        except ChangeError as exc:
            problems = exc.problems
        status = 400 if problems else 200
        return render_template("policy/yaml.html", text=text, problems=problems), status
    with session_scope() as s:
        text = dump_policy(export_policy(s))
    return render_template("policy/yaml.html", text=text, problems=problems)
