"""Slack's doors into the portal: interactivity, the `/airlock` command, and the link page.

/slack/actions and /slack/commands are public by name (Slack signs its requests; there
is no session) and CSRF-exempt; each request is signature-checked on its raw body
before anything else, and without a signing secret they do not exist (404). The link
page (make a code for `/airlock link CODE`, or remove the link) is an ordinary portal
page: sign-in, roles and CSRF as everywhere.
"""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from app.config import settings
from app.db import session_scope
from app.models import User
from app.portal.security import VIEW, requires
from app.slack import actions, linking, signing

log = logging.getLogger(__name__)
bp = Blueprint("slack", __name__)


def _verified_form() -> dict[str, str]:
    """The request's form fields, once Slack's signature over the raw body checks out."""
    secret = settings().slack_signing_secret
    if not secret:
        abort(404)
    raw = request.get_data(cache=True)  # the bytes as sent: re-encoded form data would not verify
    reason = signing.check(secret, raw, request.headers)
    if reason is not None:
        signing.audit_refusal(reason, path=request.path, remote=request.remote_addr,
                              timestamp=request.headers.get("X-Slack-Request-Timestamp"))
        abort(401)
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        abort(400)
    return {k: v[0] for k, v in fields.items() if v}


def _answer(ack: actions.Ack):
    actions.dispatch(ack)
    if ack.body is None:
        return "", 200
    return jsonify(ack.body), 200


@bp.post("/slack/actions")
def actions_endpoint():
    form = _verified_form()
    try:
        payload = json.loads(form.get("payload") or "")
    except ValueError:
        abort(400)
    if not isinstance(payload, dict):
        abort(400)
    return _answer(actions.handle_interaction(payload))


@bp.post("/slack/commands")
def commands_endpoint():
    return _answer(actions.handle_command(_verified_form()))


@bp.get("/slack/link")
@requires(*VIEW)
def link_page():
    return render_template("slack/link.html", linked=_linked_slack_id(), code=None,
                           minutes=int(linking.CODE_TTL.total_seconds() // 60))


@bp.post("/slack/link")
@requires(*VIEW)
def link_code():
    """A new one-time code, shown once, for `/airlock link CODE` in Slack."""
    with session_scope() as s:
        code = linking.make_code(s, current_user.uid)
    return render_template("slack/link.html", linked=_linked_slack_id(), code=code,
                           minutes=int(linking.CODE_TTL.total_seconds() // 60))


@bp.post("/slack/unlink")
@requires(*VIEW)
def unlink():
    with session_scope() as s:
        old = linking.unlink_user(s, current_user.uid, actor=current_user.email)
    flash(f"Your account is no longer linked to the Slack user {old}." if old else "Your account was not linked.", "ok")
    return redirect(url_for(".link_page"))


def _linked_slack_id() -> str | None:
    with session_scope() as s:
        user = s.get(User, current_user.uid)
        return user.slack_user_id if user is not None else None
