"""Keep Slack messages true: queue a review's message when its state changes.

`track` runs wherever a review may have changed (the notifier's reconcile, right after
a Slack vote). It compares the review's state with the state last queued and, if they
differ, re-arms the message's outbox row. The drainer delivers it (app.slack.delivery),
rendered from the review as it is *then*, so a late delivery never shows an old state.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Review, SlackMessage, utcnow
from app.slack import client as slack
from app.slack import messages, outbox


def _ensure_row(session: Session, key: str, review_id: int | None) -> SlackMessage:
    """The message row for `key`, made if missing; safe when two processes race to make it."""
    row = session.scalars(select(SlackMessage).where(SlackMessage.key == key)).first()
    if row is not None:
        return row
    insert = outbox.insert_for(session)
    now = utcnow()
    session.execute(insert(SlackMessage).values(
        key=key, review_id=review_id, text="", blocks=[], wanted="", final=False, note="", created_at=now,
        updated_at=now,
    ).on_conflict_do_nothing(index_elements=["key"]))
    return session.scalars(
        select(SlackMessage).where(SlackMessage.key == key).execution_options(populate_existing=True)
    ).one()


def track(session: Session, review: Review, *, now: datetime | None = None,
          message: SlackMessage | None = None) -> bool:
    """Queue the review's message if Slack does not show its current state yet; True if queued."""
    if not slack.configured():
        return False
    now = now or utcnow()
    tag = messages.state_tag(review, now)
    row = message or _ensure_row(session, f"review:{review.id}", review.id)
    if row.wanted == tag:
        return False
    row.wanted = tag
    # Once the outcome is queued, nothing else will change: reconcile stops looking at it.
    row.final = not tag.startswith("pending:")
    session.flush()
    outbox.queue_message(session, row.id, now=now)
    return True
