"""Why a vote was not counted, by type: the API maps NotFound to 404 and the rest to 409."""
from __future__ import annotations

from app.errors import Conflict, NotFound


class VoteError(Conflict):
    """A vote that cannot be counted; `message` is safe to show to the voter."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReviewNotFound(VoteError, NotFound):
    """The review (or the window, or the access request) the vote names does not exist."""
