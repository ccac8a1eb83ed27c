"""Typed SQLAlchemy 2.0 models: the store every process shares.

Times are stored as timezone-aware UTC. Secrets live only in `Connection.secrets`
(Fernet ciphertext, see app.vault) and as hashes (`Token.token_hash`,
`User.password_hash`, `User.api_token_hash`).
"""
from app.models.base import Base, UTCDateTime, utcnow
from app.models.identity import user_groups, service_account_groups, Group, User, ServiceAccount, Token, user_by_email
from app.models.inventory import Connection, Grant, Rule, StoreVersion
from app.models.reviews import BusEvent, Review, Vote, FingerprintApproval
from app.models.records import RecordedSession, RecordingOwner, SessionEvent, AuditEntry
from app.models.campaigns import AccessRequest, Campaign, CampaignRun, CampaignItem, SessionUsage
from app.models.slack import SlackMessage, SlackOutbox, SlackLinkCode
from app.models.keys import JWKSDocument

__all__ = [
    "utcnow",
    "UTCDateTime",
    "Base",
    "user_groups",
    "service_account_groups",
    "Group",
    "User",
    "user_by_email",
    "ServiceAccount",
    "Token",
    "Connection",
    "Grant",
    "Rule",
    "StoreVersion",
    "BusEvent",
    "Review",
    "Vote",
    "FingerprintApproval",
    "RecordedSession",
    "RecordingOwner",
    "SessionEvent",
    "AuditEntry",
    "Campaign",
    "CampaignRun",
    "CampaignItem",
    "AccessRequest",
    "SessionUsage",
    "SlackMessage",
    "SlackOutbox",
    "SlackLinkCode",
    "JWKSDocument",
]
