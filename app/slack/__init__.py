"""The Slack bot: a second front door to the approvals service.

- messages   Block Kit for review messages and the reject modal (pure)
- sync       queue a review's message again whenever its state changes
- outbox     durable delivery with retries (Retry-After, backoff, leases)
- delivery   render one queued message from the store and post or update it
- notifier   reconcile reviews with their messages; the scheduler-side worker
- actions    the interaction and `/airlock` handler (HTTP and Socket Mode share it)
- signing    request signatures on the raw body; refusals audited
- linking    Slack user <-> airlock user (verified email, `/airlock link`)
- socket_mode  the Socket Mode client
- dm         access-review DMs for the campaigns service
- client     WebClient, failure classification, response_url

Nothing here decides a review: votes go through `app.approvals.vote`.
"""
