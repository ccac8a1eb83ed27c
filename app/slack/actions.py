"""What a Slack interaction or `/airlock` command does: the one handler for HTTP and Socket Mode.

`handle_interaction` / `handle_command` answer at once with an `Ack` (what Slack gets
back within its 3 s) plus the work to do afterwards, which `dispatch` runs in
background threads. The work never decides anything itself: votes go to
`approvals.vote` (the same checks as the portal), access-review items to the campaigns
service's decider. A refused attempt gets an ephemeral reply and an audit entry.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping

from app import approvals, audit
from app.config import settings
from app.db import session_scope
from app.models import Review, utcnow
from app.slack import client as slack
from app.slack import dm, linking, messages, outbox, sync
from app.slack.linking import NotLinked, SlackActor

log = logging.getLogger(__name__)

Work = Callable[[], None]


@dataclass
class Ack:
    """The immediate answer (None: an empty 200) and the work that follows it."""

    body: dict[str, Any] | None = None
    work: list[Work] = field(default_factory=list)


@dataclass(frozen=True)
class ReplyTo:
    """Where an ephemeral reply to this person goes."""

    user_id: str
    channel: str | None = None
    response_url: str | None = None


def dispatch(ack: Ack) -> None:
    for work in ack.work:
        outbox.executor().submit(_guarded, work)


def _guarded(work: Work) -> None:
    try:
        work()
    except Exception:  # a background failure must not vanish silently
        log.exception("slack background work failed")


def reply(to: ReplyTo, text: str) -> None:
    """An ephemeral message only `to` sees: via response_url, else chat.postEphemeral."""
    try:
        with session_scope() as s:
            if to.response_url and slack.response_url_allowed(to.response_url):
                outbox.queue_response(s, to.response_url, messages.ephemeral(text))
            elif to.channel:
                outbox.queue_call(s, "chat.postEphemeral", {"channel": to.channel, "user": to.user_id, "text": text},
                                  ttl=outbox.RESPONSE_TTL)
            else:
                outbox.queue_call(s, "chat.postMessage", {"channel": to.user_id, "text": text}, ttl=outbox.RESPONSE_TTL)
    except Exception:
        log.exception("could not queue a Slack reply to %s", to.user_id)
        return
    outbox.kick()


def _int(value: Any) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**31 else None


def _actor(payload: Mapping[str, Any]) -> SlackActor | None:
    user = payload.get("user") or {}
    team = payload.get("team") or {}
    if not isinstance(user, dict) or not user.get("id"):
        return None
    return SlackActor(user_id=str(user["id"]), team_id=str(user.get("team_id") or team.get("id") or ""),
                      name=str(user.get("username") or user.get("name") or ""))


# -- interactions -----------------------------------------------------------------------

def handle_interaction(payload: Mapping[str, Any]) -> Ack:
    actor = _actor(payload)
    if actor is None:
        return Ack()
    kind = payload.get("type")
    if kind == "block_actions":
        return _block_actions(payload, actor)
    if kind == "view_submission":
        return _view_submission(payload, actor)
    return Ack()  # view_closed, shortcuts, ...: nothing to do


def _block_actions(payload: Mapping[str, Any], actor: SlackActor) -> Ack:
    actions = payload.get("actions") or []
    if not actions or not isinstance(actions[0], dict):
        return Ack()
    action = actions[0]
    action_id, target = action.get("action_id"), _int(action.get("value"))
    container = payload.get("container") or {}
    channel = container.get("channel_id") or (payload.get("channel") or {}).get("id")
    to = ReplyTo(actor.user_id, channel, payload.get("response_url"))
    if target is None:
        return Ack()
    if action_id == messages.APPROVE:
        return Ack(work=[partial(cast_vote, actor, target, "approve", "", None, to)])
    if action_id == messages.APPROVE_WINDOW:
        return Ack(work=[partial(cast_vote, actor, target, "approve", "", messages.SLACK_WINDOW_MINUTES, to)])
    if action_id == messages.REJECT:
        return Ack(work=[partial(open_reject, actor, target, payload.get("trigger_id"), to)])
    where = (channel, container.get("message_ts") or (payload.get("message") or {}).get("ts"))
    if action_id == dm.REVOKE:
        return Ack(work=[partial(decide_item, actor, target, "revoke", "", where, to)])
    if action_id == dm.CERTIFY:
        blocks = (payload.get("message") or {}).get("blocks") or []
        return Ack(work=[partial(open_certify, target, dm.item_summary(blocks, target), payload.get("trigger_id"),
                                 where, to)])
    return Ack()


def _view_submission(payload: Mapping[str, Any], actor: SlackActor) -> Ack:
    view = payload.get("view") or {}
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return Ack()
    values = (view.get("state") or {}).get("values") or {}
    to = ReplyTo(actor.user_id, meta.get("channel"), meta.get("response_url"))
    if view.get("callback_id") == messages.REJECT_VIEW:
        reason = _text_value(values, messages.REASON_BLOCK)
        review_id = _int(meta.get("review_id"))
        if not reason:
            return Ack(body={"response_action": "errors",
                             "errors": {messages.REASON_BLOCK: "A rejection needs a reason: the requester sees it."}})
        if review_id is None:
            return Ack()
        return Ack(work=[partial(cast_vote, actor, review_id, "reject", reason, None, to)])
    if view.get("callback_id") == dm.CERTIFY_VIEW:
        justification = _text_value(values, dm.JUSTIFICATION_BLOCK)
        item_id = _int(meta.get("item_id"))
        if not justification:
            return Ack(body={"response_action": "errors",
                             "errors": {dm.JUSTIFICATION_BLOCK: "Certifying needs a justification."}})
        if item_id is None:
            return Ack()
        where = (meta.get("channel"), meta.get("ts"))
        return Ack(work=[partial(decide_item, actor, item_id, "certify", justification, where, to)])
    return Ack()


def _text_value(values: Mapping[str, Any], block: str) -> str:
    value = ((values.get(block) or {}).get(block) or {}).get("value") or ""
    return str(value).strip()[:2000]


# -- the work ---------------------------------------------------------------------------

def cast_vote(actor: SlackActor, review_id: int, decision: str, reason: str, window: int | None, to: ReplyTo) -> None:
    try:
        email = linking.resolve(actor)
    except NotLinked as exc:
        _refused(actor, None, review_id, exc.message, to)
        return
    try:
        with session_scope() as s:
            approvals.vote(s, review_id, voter_email=email, decision=decision, reason=reason, window_minutes=window,
                           via="slack")
    except approvals.VoteError as exc:
        _refused(actor, email, review_id, f"Your vote on review #{review_id} was not counted: {exc.message}", to)
        _refresh(review_id)  # e.g. decided elsewhere meanwhile: make sure the message says so
        return
    _refresh(review_id)


def _refresh(review_id: int) -> None:
    """Queue the message update now rather than at the notifier's next look (best effort)."""
    try:
        with session_scope() as s:
            review = s.get(Review, review_id)
            if review is not None:
                sync.track(s, review)
    except Exception:  # the notifier's reconcile will get there
        log.exception("could not queue the Slack update of review %s", review_id)
        return
    outbox.kick()


def _refused(actor: SlackActor, email: str | None, review_id: int, message: str, to: ReplyTo) -> None:
    try:
        with session_scope() as s:
            audit.append(s, email or actor.label, "slack.vote_refused", f"review:{review_id}", {
                "review_id": review_id, "slack_user_id": actor.user_id, "reason": message,
            })
    except Exception:
        log.exception("could not audit a refused Slack vote")
    reply(to, message)


def open_reject(actor: SlackActor, review_id: int, trigger_id: str | None, to: ReplyTo) -> None:
    """Open the reason form, only for someone whose rejection would count (the same
    eligibility `approvals.vote` enforces: nobody types a reason to be refused after)."""
    try:
        email = linking.resolve(actor)
    except NotLinked as exc:
        _refused(actor, None, review_id, exc.message, to)
        return
    with session_scope() as s:
        review = s.get(Review, review_id)
        if review is None:
            reply(to, f"Review #{review_id} does not exist.")
            return
        refusal = approvals.vote_refusal(review, approvals.voter(s, email), email, via="slack")
        decided = messages.effective_status(review, utcnow()) != "pending"
        summary = (f"*{messages.escape(review.service_account)}* wants to run this on "
                   f"*{messages.escape(review.connection)}*:\n{messages.code_block(review.operation, 1500)}")
    url = approvals.review_url(review_id)
    if refusal:
        _refused(actor, email, review_id, f"You cannot reject review #{review_id}: {refusal}", to)
        if decided:
            _refresh(review_id)  # decided elsewhere meanwhile: make sure the message says so
        return
    meta = {"review_id": review_id, "channel": to.channel, "response_url": to.response_url}
    try:
        slack.web_client().views_open(trigger_id=trigger_id or "", view=messages.reject_modal(review_id, summary, meta))
    except Exception as exc:  # the trigger lives 3 s: no point in queueing a retry
        reply(to, f"Could not open the reject form ({slack.classify(exc)}). Reject in the portal: {url}")


def open_certify(item_id: int, summary: str, trigger_id: str | None, where: tuple[str | None, str | None],
                 to: ReplyTo) -> None:
    meta = {"channel": where[0], "ts": where[1], "response_url": to.response_url}
    try:
        slack.web_client().views_open(trigger_id=trigger_id or "", view=dm.certify_modal(item_id, summary, meta))
    except Exception as exc:
        reply(to, f"Could not open the certify form ({slack.classify(exc)}). Certify in the portal instead.")


def decide_item(actor: SlackActor, item_id: int, decision: str, justification: str,
                where: tuple[str | None, str | None], to: ReplyTo) -> None:
    import app.campaigns  # noqa: F401 - registers its decider with dm (campaigns sits above dm)

    decide = dm.decider()
    if decide is None:
        reply(to, "Access reviews cannot be decided from Slack here yet. Use the portal.")
        return
    try:
        email = linking.resolve(actor)
    except NotLinked as exc:
        reply(to, exc.message)
        return
    try:
        with session_scope() as s:
            outcome = decide(s, item_id, decision, email, justification)
    except dm.ItemError as exc:
        reply(to, exc.message)
        return
    try:
        with session_scope() as s:
            dm.record_outcome(s, item_id=item_id, outcome=outcome, channel=where[0], ts=where[1])
    except Exception:
        log.exception("could not queue the DM update for item %s", item_id)
        return
    outbox.kick()


# -- /airlock ---------------------------------------------------------------------------

HELP = ("*/airlock link CODE*: link your Slack account to your airlock account (make the code on the portal's "
        "Slack page)\n"
        "*/airlock whoami*: show which airlock account your Slack account is linked to\n"
        "*/airlock unlink*: remove the link")


def handle_command(form: Mapping[str, str]) -> Ack:
    """Slash commands are answered in the response itself: they only touch the store."""
    user_id = (form.get("user_id") or "").strip()
    if not user_id:
        return Ack(body={"response_type": "ephemeral", "text": "No Slack user in this request."})
    actor = SlackActor(user_id=user_id, team_id=form.get("team_id") or "", name=form.get("user_name") or "")
    words = (form.get("text") or "").split()
    sub = words[0].lower() if words else "whoami"
    try:
        text = _command(sub, words[1:], actor)
    except Exception:
        log.exception("/airlock %s failed", sub)
        text = "airlock could not do that just now. Try again in a minute."
    return Ack(body={"response_type": "ephemeral", "text": text})


def _command(sub: str, args: list[str], actor: SlackActor) -> str:
    if sub == "link":
        return _link(actor, "".join(args))
    with session_scope() as s:
        if sub == "unlink":
            email = linking.unlink(s, actor)
            return f"Unlinked from {email}." if email else "Your Slack account was not linked."
        if sub in ("whoami", "status"):
            email = linking.linked_email(s, actor.user_id)
            if email:
                return f"Your Slack account is linked to the airlock account {email}."
            return f"Your Slack account is not linked yet. {linking.how_to_link()}"
    return HELP


def _link(actor: SlackActor, code: str) -> str:
    page = f"{settings().public_url}/slack/link"
    if not code:
        return f"Sign in to airlock at <{page}|the Slack page>, make a link code, and run `/airlock link CODE` here."
    try:
        with session_scope() as s:
            email = linking.redeem(s, code, actor)
    except NotLinked as exc:
        # Audited apart from the failed transaction: repeated failures may be someone guessing.
        with session_scope() as s:
            audit.append(s, actor.label, "slack.link_refused", f"slack:{actor.user_id}",
                         {"slack_user_id": actor.user_id, "team_id": actor.team_id, "reason": exc.message})
        return exc.message
    return f"Linked: what you approve or reject in Slack now counts as {email}."
