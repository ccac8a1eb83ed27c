"""The MySQL bypass corpus (cases.yaml), loaded once."""
from __future__ import annotations

from pathlib import Path

import yaml

from app.sql.mysql import classify_mysql
from app.types import KINDS

CASES: list[dict] = yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text())


def text_of(case: dict, db: str) -> str:
    return case["send"].replace("{db}", db)


def rank(text: str) -> int:
    return max((KINDS.index(s.kind) for s in classify_mysql(text)), default=0)
