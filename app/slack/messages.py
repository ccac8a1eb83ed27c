"""Block Kit for review messages and the reject modal. Pure: plain data in, JSON out.

Everything a runtime or a person typed is escaped before it reaches mrkdwn, so an
operation cannot mention @channel, fake a link, or close the code block around it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.binding import window_note
from app.models import Review, utcnow
from app.risk import risk as risk_of

APPROVE = "airlock.approve"
APPROVE_WINDOW = "airlock.approve_window"
REJECT = "airlock.reject"
REJECT_VIEW = "airlock.reject_reason"
REASON_BLOCK = "reason"
SLACK_WINDOW_MINUTES = 30

OPERATION_LIMIT = 2600  # a section's text holds 3000 characters
RISK_MARK = {"low": "🟢 low", "medium": "🟠 medium", "high": "🔴 high"}
OUTCOME = {"approved": "✅ *Approved*", "rejected": "⛔ *Rejected*", "expired": "⌛ *Expired*"}


def escape(text: Any) -> str:
    """Slack's three control characters; everything else is shown as written."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain(text: str, limit: int) -> dict[str, Any]:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return {"type": "plain_text", "text": text, "emoji": True}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def code_block(text: str, limit: int = OPERATION_LIMIT) -> str:
    shown = text if len(text) <= limit else text[:limit] + "\n… (truncated: the full text is in the portal)"
    # A zero-width space breaks any ``` inside, so the text cannot end our block early.
    return "```" + escape(shown).replace("```", "`\u200b``") + "```"


def slack_date(when: datetime, token: str = "{date_short_pretty} {time}") -> str:
    """Shown in each reader's own time zone; the fallback is UTC."""
    return f"<!date^{int(when.timestamp())}^{token}|{when:%Y-%m-%d %H:%M} UTC>"


def minutes_left(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def effective_status(review: Review, now: datetime) -> str:
    # The scheduler flips a pending review to expired within seconds; don't show buttons
    # that can no longer count in the meantime.
    if review.status == "pending" and review.expires_at <= now:
        return "expired"
    return review.status


def state_tag(review: Review, now: datetime | None = None) -> str:
    """Changes exactly when the rendered message would: status and the votes so far."""
    return f"{effective_status(review, now or utcnow())}:{len(review.votes)}"


@dataclass(frozen=True)
class VoteLine:
    who: str  # mrkdwn: a <@U..> mention or an escaped name
    decision: str
    window_minutes: int | None
    via: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class ReviewCard:
    """What a review message shows; built from a Review by `card_for`."""

    id: int
    status: str
    service_account: str
    connection: str
    protocol: str
    kind: str
    operation: str
    rule: str
    message: str
    risk: str
    run_id: str | None
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None  # mrkdwn
    reason: str
    required: int
    approvals: int  # distinct approvers so far
    groups: tuple[str, ...]
    slack: bool
    can_window: bool
    window_minutes: int | None
    votes: tuple[VoteLine, ...]
    url: str
    shape: str = ""  # what a window approval covers, with placeholders
    params: tuple[str | None, ...] = ()
    body: str = ""  # an HTTP body: size, type, digest
    requester_gone: bool = False


def card_for(review: Review, people: dict[str, str], url: str, now: datetime | None = None) -> ReviewCard:
    """`people` maps a lower-cased email to how to show that person (mention or name)."""
    now = now or utcnow()

    def who(email: str | None) -> str | None:
        if not email:
            return None
        return people.get(email.lower()) or escape(email)

    details = review.details or {}
    return ReviewCard(
        id=review.id, status=effective_status(review, now), service_account=review.service_account,
        connection=review.connection, protocol=review.protocol, kind=review.kind or "", operation=review.operation,
        rule=review.rule, message=review.message or "",
        risk=risk_of(review.kind, details.get("attributes"), review.protocol), run_id=review.run_id,
        expires_at=review.expires_at, decided_at=review.decided_at,
        decided_by=who(review.decided_by) if review.decided_by != "system" else None, reason=review.reason or "",
        required=review.required,
        approvals=len({v.approver.lower() for v in review.votes if v.decision == "approve"}),
        groups=tuple(review.groups or ()), slack=review.slack,
        can_window=bool(review.fingerprint), window_minutes=details.get("window_minutes"),
        votes=tuple(VoteLine(who(v.approver) or "?", v.decision, v.window_minutes, v.via, v.reason or "", v.created_at)
                    for v in review.votes),
        url=url, shape=review.shape or "", params=tuple(details.get("params") or ()),
        body=details.get("body") or "", requester_gone=review.requester_gone_at is not None,
    )


def review_text(card: ReviewCard) -> str:
    """The notification and screen-reader text; blocks carry the detail."""
    head = f"Review #{card.id}: {card.service_account} wants a {card.kind or 'operation'} on {card.connection}"
    return escape(head if card.status == "pending" else f"{head} ({card.status})")


def review_blocks(card: ReviewCard, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or utcnow()
    pending = card.status == "pending"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": plain(f"Review #{card.id} · {card.kind or 'operation'} on {card.connection}", 150)},
        {"type": "section", "text": mrkdwn(
            f"*{escape(card.service_account)}* wants to run this on *{escape(card.connection)}* "
            f"({escape(card.protocol)}):\n{code_block(card.operation)}")},
    ]
    if card.params:
        shown = "\n".join(f"${i} = {'NULL' if p is None else p}" for i, p in enumerate(card.params, 1))
        blocks.append({"type": "section", "text": mrkdwn(f"*Bound parameters*\n{code_block(shown, 2800)}")})
    if card.body:
        blocks.append({"type": "context", "elements": [mrkdwn(f"*Body:* {escape(card.body)[:2900]}")]})
    if card.requester_gone and pending:
        blocks.append({"type": "context", "elements": [mrkdwn(
            "⚠️ *Requester gone*: the runtime left while this was held, and nothing ran. "
            "Approving lets an identical retry through once.")]})
    if card.message:
        blocks.append({"type": "context", "elements": [mrkdwn(escape(card.message)[:2900])]})
    groups = ", ".join(card.groups) or "admins"
    fields = [
        f"*Service account*\n{escape(card.service_account)}",
        f"*Connection*\n{escape(card.connection)} ({escape(card.protocol)})",
        f"*Rule*\n{escape(card.rule or '—')}",
        f"*Risk*\n{RISK_MARK.get(card.risk, escape(card.risk))}",
        f"*Run id*\n{escape(card.run_id) if card.run_id else '—'}",
    ]
    if pending:
        left = (card.expires_at - now).total_seconds()
        fields.append(f"*Time left*\n{minutes_left(left)} (until {slack_date(card.expires_at, '{time}')})")
    else:
        fields.append(f"*Status*\n{card.status}")
    fields.append(f"*Approvals*\n{card.approvals} of {card.required} · {escape(groups)}")
    blocks.append({"type": "section", "fields": [mrkdwn(f[:1990]) for f in fields]})
    if card.votes:
        lines = [_vote_line(v) for v in card.votes[:10]]
        blocks.append({"type": "context", "elements": [mrkdwn("\n".join(lines)[:2900])]})
    if pending and card.slack:
        if card.can_window:
            blocks.append({"type": "context", "elements": [mrkdwn(
                f"*A window would cover* (approve once covers only the operation above):\n"
                f"{code_block(card.shape or card.operation, 2400)}\n{escape(window_note(card.protocol))}")]})
        blocks.append(_buttons(card))
    elif pending:
        blocks.append({"type": "section", "text": mrkdwn(
            "🔐 *Approve in the portal.* This rule asks for the portal's stronger sign-in, "
            f"so Slack shows no buttons: <{card.url}|open review #{card.id}>.")})
    else:
        blocks.append({"type": "section", "text": mrkdwn(_outcome(card))})
    link = f"<{card.url}|Open review #{card.id} in the airlock portal>"
    blocks.append({"type": "context", "elements": [mrkdwn(link)]})
    return blocks


def _vote_line(v: VoteLine) -> str:
    verb = "approved" if v.decision == "approve" else "rejected"
    window = f" for {v.window_minutes} min" if v.window_minutes else ""
    return f"• {v.who} {verb}{window} via {escape(v.via)} at {slack_date(v.at, '{time}')}"


def _outcome(card: ReviewCard) -> str:
    mark = OUTCOME.get(card.status, f"*{escape(card.status)}*")
    when = f" at {slack_date(card.decided_at)}" if card.decided_at else ""
    if card.status == "expired":
        return f"{mark}{when}: nobody decided in time. The runtime has to ask again."
    text = f"{mark} by {card.decided_by or 'airlock'}{when}"
    deciding = "reject" if card.status == "rejected" else "approve"
    via = next((v.via for v in reversed(card.votes) if v.decision == deciding), None)
    if via:
        text += f" (via {escape(via)})"
    if card.status == "approved" and card.window_minutes:
        text += (f". Every operation of this shape is approved for this service account for {card.window_minutes} "
                 f"min:\n{code_block(card.shape or card.operation, 1200)}")
    if card.reason:
        text += f"\n>{escape(card.reason[:1500])}"
    return text


def _buttons(card: ReviewCard) -> dict[str, Any]:
    value = str(card.id)
    elements: list[dict[str, Any]] = [
        {"type": "button", "action_id": APPROVE, "text": plain("Approve once (exactly this)", 75), "style": "primary",
         "value": value},
    ]
    if card.can_window:
        # A wider approval than what the message shows: Slack asks to confirm, showing the
        # shape it will cover, before the click counts.
        elements.append({"type": "button", "action_id": APPROVE_WINDOW,
                         "text": plain(f"Approve this shape for {SLACK_WINDOW_MINUTES} min…", 75), "value": value,
                         "confirm": window_confirm(card)})
    elements.append({"type": "button", "action_id": REJECT, "text": plain("Reject…", 75), "style": "danger",
                     "value": value})
    return {"type": "actions", "block_id": f"review-{card.id}", "elements": elements}


def window_confirm(card: ReviewCard) -> dict[str, Any]:
    """The confirmation Slack shows before a window vote counts (the shape itself is in
    the message, whole: a confirmation holds 300 characters)."""
    text = (f"For {SLACK_WINDOW_MINUTES} min, {escape(card.service_account)} may run on {escape(card.connection)}, "
            f"without asking again, every operation of the shape shown under “A window would cover”. "
            f"{escape(window_note(card.protocol))}")
    return {"title": plain("Approve a whole shape?", 100), "text": plain(text, 300),
            "confirm": plain(f"Approve for {SLACK_WINDOW_MINUTES} min", 30), "deny": plain("Cancel", 30)}


# -- the reject modal ------------------------------------------------------------------

def reject_modal(review_id: int, summary: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "title": plain(f"Reject review #{review_id}", 24),
        "submit": plain("Reject", 24),
        "close": plain("Cancel", 24),
        "private_metadata": json.dumps(metadata, separators=(",", ":"))[:3000],
        "blocks": [
            {"type": "section", "text": mrkdwn(summary[:2900])},
            {"type": "input", "block_id": REASON_BLOCK, "label": plain("Reason (the requester sees it)", 2000),
             "element": {"type": "plain_text_input", "action_id": REASON_BLOCK, "multiline": True,
                         "min_length": 1, "max_length": 2000}},
        ],
    }


def ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "replace_original": False, "text": text}
