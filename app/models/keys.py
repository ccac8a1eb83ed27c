"""Signing keys fetched from identity providers, shared by every process through the store."""
from __future__ import annotations

from sqlalchemy import Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class JWKSDocument(Base):
    """The last good JWKS of one issuer: a node or worker that starts while the IdP is down
    verifies tokens with it, until `fetched_at` is older than AIRLOCK_JWKS_MAX_AGE_SECONDS."""

    __tablename__ = "jwks_documents"

    issuer: Mapped[str] = mapped_column(String(500), primary_key=True)
    jwks_uri: Mapped[str] = mapped_column(String(1000))
    document: Mapped[str] = mapped_column(Text)  # the signing keys as published (JSON)
    fetched_at: Mapped[float] = mapped_column(Float)  # epoch seconds of the fetch from the IdP
