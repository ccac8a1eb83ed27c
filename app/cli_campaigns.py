"""`airlock campaign ...` and `airlock access ...`: access reviews and JIT requests from a shell."""
from __future__ import annotations

import click

from app.cli_common import fail, parse_ttl


@click.group()
def campaign() -> None:
    """Access-review campaigns (defined in the policy file's campaigns:)."""


@campaign.command("list")
def campaign_list() -> None:
    """Every campaign: schedule, reviewers, last run and its progress."""
    from sqlalchemy import select

    from app.campaigns.runs import latest_run, next_due, progress
    from app.db import session_scope
    from app.models import Campaign, utcnow

    with session_scope() as s:
        rows = s.scalars(select(Campaign).order_by(Campaign.name)).all()
        if not rows:
            click.echo("no campaigns (add them under campaigns: in the policy file)")
        for c in rows:
            run = latest_run(s, c)
            last = (f"run {run.id} {run.status}, started {run.started_at:%Y-%m-%d %H:%M}, "
                    f"{progress(run)['done']}/{progress(run)['total']} decided" if run else "never run")
            due = next_due(c, run.started_at if run else utcnow()) if c.enabled else None
            when = f"next {due:%Y-%m-%d %H:%M} UTC" if due else ("disabled" if not c.enabled else "no schedule")
            deadline = c.on_deadline + (f" {c.escalate_to}" if c.escalate_to else "")
            click.echo(f"{c.name}\t{c.schedule or '-'}\treviewers {c.reviewers}\ton_deadline {deadline}\t{last}\t{when}")


@campaign.command("start")
@click.argument("name")
@click.option("--actor", default="cli", show_default=True, help="Who started it, for the audit log.")
def campaign_start(name: str, actor: str) -> None:
    """Start a run of campaign NAME now."""
    from app.campaigns.runs import CampaignError, start_by_name
    from app.db import session_scope

    try:
        with session_scope() as s:
            run = start_by_name(s, name, actor=actor)
            run_id, deadline, n = run.id, run.deadline, len(run.items)
    except CampaignError as exc:
        fail(exc.message)
    click.echo(f"campaign {name}: run {run_id} started with {n} item(s), due {deadline:%Y-%m-%d %H:%M} UTC")


@campaign.command("status")
@click.argument("name")
def campaign_status(name: str) -> None:
    """The latest run of NAME: progress, and every item with its suggestion and decision."""
    from app.campaigns.report import run_for
    from app.campaigns.runs import CampaignError, progress
    from app.db import session_scope

    try:
        with session_scope() as s:
            run = run_for(s, name)
            p = progress(run)
            click.echo(f"campaign {name}: run {run.id} {run.status}, started {run.started_at:%Y-%m-%d %H:%M} by "
                       f"{run.started_by}, due {run.deadline:%Y-%m-%d %H:%M} UTC")
            click.echo(f"{p['done']}/{p['total']} decided: {p['certified']} certified, {p['revoked']} revoked, "
                       f"{p['kept']} kept at deadline, {p['pending']} pending")
            for i in sorted(run.items, key=lambda i: i.id):
                click.echo(f"  {i.id}\t{i.service_account} -> {i.connection}\t{i.status}\treviewer {i.reviewer}\t"
                           f"suggest {i.suggestion}: {i.suggestion_reason}"
                           + (f"\t{i.deadline_outcome}" if i.deadline_outcome else ""))
    except CampaignError as exc:
        fail(exc.message)


@campaign.command("report")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--run", "run_id", type=int, default=None, help="A run id (default: the latest run).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None)
def campaign_report(name: str, fmt: str, run_id: int | None, output: str | None) -> None:
    """Evidence of a run: each grant, reviewer, decision, justification, time, usage, deadline outcome."""
    from app.campaigns.report import render, run_for
    from app.campaigns.runs import CampaignError
    from app.db import session_scope

    try:
        with session_scope() as s:
            text = render(run_for(s, name, run_id), fmt)
    except CampaignError as exc:
        fail(exc.message)
    if output:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)


@click.group()
def access() -> None:
    """Just-in-time access requests."""


@access.command("request")
@click.argument("service_account")
@click.argument("connection")
@click.option("--for", "for_", required=True, help="How long the access lasts once approved: 30m, 2h, 1d ...")
@click.option("--reason", required=True, help="Why: approvers see it.")
@click.option("--pending-for", default="24h", show_default=True, help="How long the request waits for approvers.")
@click.option("--requested-by", default="cli", show_default=True, help="Who asks (a person on the account's behalf).")
def access_request(service_account: str, connection: str, for_: str, reason: str, pending_for: str,
                   requested_by: str) -> None:
    """Ask for SERVICE_ACCOUNT to reach CONNECTION for a while; approvers decide it as a review."""
    from app.approvals import review_url
    from app.campaigns.requests import create
    from app.campaigns.runs import CampaignError
    from app.db import session_scope

    try:
        with session_scope() as s:
            req = create(s, service_account=service_account, connection=connection, duration=parse_ttl(for_),
                         reason=reason, requested_by=requested_by, pending_for=parse_ttl(pending_for))
            rid, review_id, until = req.id, req.review_id, req.expires_at
    except CampaignError as exc:
        fail(exc.message)
    click.echo(f"access request {rid} is pending approval until {until:%Y-%m-%d %H:%M} UTC: {review_url(review_id)}")


@access.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also decided and expired requests.")
def access_list(show_all: bool) -> None:
    """Access requests, newest first."""
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import AccessRequest

    with session_scope() as s:
        stmt = select(AccessRequest).order_by(AccessRequest.id.desc()).limit(200)
        if not show_all:
            stmt = stmt.where(AccessRequest.status.in_(("pending", "approved")))
        for r in s.scalars(stmt):
            until = f"until {r.access_until:%Y-%m-%d %H:%M}" if r.access_until else ""
            click.echo(f"{r.id}\t{r.service_account} -> {r.connection}\t{r.status}\t{until}\t{r.reason}")


def register(main: click.Group) -> None:
    main.add_command(campaign)
    main.add_command(access)
