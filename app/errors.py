"""Typed outcomes of domain calls that front doors map to their own answers.

Domain code raises them (a review, a grant, a token that is not there; a change the
current state refuses); the portal, the API and Slack choose their status or wording by
type, never by reading the message.
"""
from __future__ import annotations


class NotFound(LookupError):
    """What the request names does not exist (HTTP 404)."""


class Conflict(Exception):
    """The current state refuses the request (HTTP 409)."""
