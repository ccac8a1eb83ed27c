"""Why a vote (or a window's revocation) was refused, by type: the API and the portal map
NotFound to 404, and the API the rest to 409."""
from __future__ import annotations

from app.errors import Conflict, NotFound


class VoteError(Conflict):
    """A vote that cannot be counted; `message` is safe to show to the voter."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReviewNotFound(VoteError, NotFound):
    """The review the vote names does not exist."""


class WindowNotFound(VoteError, NotFound):
    """The window approval to revoke does not exist (app/windows.py)."""


class AccessRequestNotFound(VoteError, NotFound):
    """The access request to decide does not exist, or has no review to vote on."""
