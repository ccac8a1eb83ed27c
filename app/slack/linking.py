"""Who is clicking: a Slack user as an airlock (portal) user.

Two ways to link, both audited:
- by verified email: the first time an unlinked Slack user acts, `users.info` gives
  their email; if Slack has confirmed it and an active airlock user has it, they are
  linked (`User.slack_user_id`).
- by `/airlock link CODE`: for people whose Slack email differs. A signed-in portal user
  makes a one-time code on /slack/link and types it in Slack. The code starts at the
  portal on purpose: whoever tricks someone into using a code of theirs only gets
  their *own* airlock identity attached to a Slack user, never someone else's.

An airlock user linked to one Slack user refuses any other by email, as OIDC subjects
do; an explicit link moves the Slack user to the account that made the code.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import audit
from app.config import settings
from app.db import session_scope
from app.models import SlackLinkCode, User, user_by_email, utcnow
from app.slack import client as slack

log = logging.getLogger(__name__)

CODE_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class SlackActor:
    """The Slack user of a signed interaction."""

    user_id: str
    team_id: str = ""
    name: str = ""

    @property
    def label(self) -> str:
        return f"slack:{self.user_id}"


class NotLinked(Exception):
    """The Slack user has no airlock identity we can trust; `message` is shown to them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def how_to_link() -> str:
    return ("Your Slack email must be verified and match your airlock account; otherwise make a code at "
            f"<{settings().public_url}/slack/link|airlock's Slack page> and run `/airlock link CODE` here.")


def linked_email(session: Session, slack_user_id: str) -> str | None:
    user = session.scalars(select(User).where(User.slack_user_id == slack_user_id)).first()
    return user.email if user is not None and user.active else None


def resolve(actor: SlackActor) -> str:
    """The airlock email of this Slack user, linking by verified email on first use."""
    with session_scope() as s:
        user = s.scalars(select(User).where(User.slack_user_id == actor.user_id)).first()
        if user is not None:
            if not user.active:
                raise NotLinked("Your airlock account is disabled.")
            return user.email
    try:
        profile = slack.web_client().users_info(user=actor.user_id)["user"]
    except Exception as exc:  # Slack down or refusing: we cannot tell who this is
        failure = slack.classify(exc)
        log.warning("users.info for %s failed: %s", actor.user_id, failure)
        if failure.transient:
            raise NotLinked("airlock could not check your Slack profile just now. Try again in a minute.") from None
        raise NotLinked(f"Your Slack account is not linked to an airlock user. {how_to_link()}") from None
    email = str((profile.get("profile") or {}).get("email") or "").strip().lower()
    if profile.get("deleted") or profile.get("is_bot") or not email:
        raise NotLinked(f"Your Slack account is not linked to an airlock user. {how_to_link()}")
    if profile.get("is_email_confirmed") is not True:
        raise NotLinked("Slack has not confirmed your email address, so airlock cannot link you by it. "
                        + how_to_link())
    if actor.team_id and profile.get("team_id") and profile["team_id"] != actor.team_id:
        # A Slack Connect guest from another organisation: its email is that org's word.
        raise NotLinked(f"Only members of this workspace are linked by email. {how_to_link()}")
    with session_scope() as s:
        user = user_by_email(s, email)
        if user is None or not user.active:
            raise NotLinked(f"Your Slack account is not linked to an airlock user. {how_to_link()}")
        if user.slack_user_id and user.slack_user_id != actor.user_id:
            raise NotLinked("That airlock account is already linked to another Slack user.")
        user.slack_user_id = actor.user_id
        audit.append(s, user.email, "slack.link", f"user:{user.email}", {
            "slack_user_id": actor.user_id, "team_id": actor.team_id, "method": "verified email",
        })
        return user.email


# -- /airlock link CODE -------------------------------------------------------------------

# Unambiguous letters and digits: people type these codes.
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 10  # 50 bits, for 10 minutes, once


def _normalise(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def _hash(code: str) -> str:
    return hashlib.sha256(_normalise(code).encode()).hexdigest()


def make_code(session: Session, user_id: int) -> str:
    """A new one-time code for portal user `user_id`; earlier unused codes of theirs stop working."""
    now = utcnow()
    session.execute(update(SlackLinkCode).where(SlackLinkCode.user_id == user_id, SlackLinkCode.used_at.is_(None))
                    .values(expires_at=now).execution_options(synchronize_session=False))
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    session.add(SlackLinkCode(code_hash=_hash(raw), user_id=user_id, created_at=now, expires_at=now + CODE_TTL))
    return f"{raw[:5]}-{raw[5:]}"


def redeem(session: Session, code: str, actor: SlackActor) -> str:
    """Link `actor` to the portal user who made `code`; returns that user's email."""
    norm = _normalise(code or "")
    row = None
    if len(norm) == CODE_LENGTH:
        row = session.scalars(select(SlackLinkCode).where(SlackLinkCode.code_hash == _hash(norm))).first()
    now = utcnow()
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise NotLinked("That code is unknown, used or expired. Make a new one on the airlock portal's Slack page.")
    # Conditional, so one code links once even if two commands race with it.
    used = session.execute(
        update(SlackLinkCode).where(SlackLinkCode.id == row.id, SlackLinkCode.used_at.is_(None))
        .values(used_at=now, slack_user_id=actor.user_id, team_id=actor.team_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    user = session.get(User, row.user_id)
    if used != 1 or user is None or not user.active:
        raise NotLinked("That code is unknown, used or expired. Make a new one on the airlock portal's Slack page.")
    previous = [u for u in session.scalars(select(User).where(User.slack_user_id == actor.user_id)) if u.id != user.id]
    for other in previous:
        other.slack_user_id = None
    replaced = user.slack_user_id
    user.slack_user_id = actor.user_id
    audit.append(session, user.email, "slack.link", f"user:{user.email}", {
        "slack_user_id": actor.user_id, "team_id": actor.team_id, "method": "/airlock link",
        "replaced_slack_user_id": replaced, "unlinked_users": [u.email for u in previous],
    })
    return user.email


def unlink_user(session: Session, user_id: int, *, actor: str) -> str | None:
    """Remove a portal user's Slack link (from the portal); returns the Slack user id it had."""
    user = session.get(User, user_id)
    if user is None or not user.slack_user_id:
        return None
    old, user.slack_user_id = user.slack_user_id, None
    audit.append(session, actor, "slack.unlink", f"user:{user.email}", {"slack_user_id": old})
    return old


def unlink(session: Session, actor: SlackActor) -> str | None:
    """`/airlock unlink`: the Slack user removes its own link; returns the email it had."""
    user = session.scalars(select(User).where(User.slack_user_id == actor.user_id)).first()
    if user is None:
        return None
    user.slack_user_id = None
    audit.append(session, user.email, "slack.unlink", f"user:{user.email}", {"slack_user_id": actor.user_id})
    return user.email


def prune_codes(session: Session) -> int:
    cutoff = utcnow() - timedelta(days=1)
    rows = session.scalars(select(SlackLinkCode).where(SlackLinkCode.expires_at < cutoff)).all()
    for row in rows:
        session.delete(row)
    return len(rows)
