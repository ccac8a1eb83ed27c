"""Apply Alembic migrations from code (`airlock init`, tests)."""
from __future__ import annotations

from alembic import command
from alembic.config import Config

from app.paths import MIGRATIONS


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
