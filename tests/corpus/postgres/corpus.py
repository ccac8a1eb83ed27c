"""Loading the PostgreSQL bypass corpus (cases.yaml) and classifying its statements."""
from __future__ import annotations

from pathlib import Path

import yaml

from app.relay.postgres.checks import operations
from app.types import KINDS

HERE = Path(__file__).resolve().parent
CASES: list[dict] = yaml.safe_load((HERE / "cases.yaml").read_text())


def texts(case: dict) -> list[str]:
    """The SQL texts of a case, in the order sent (raw bytes and F messages have none)."""
    send = case.get("send")
    items = send if isinstance(send, list) else [send]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and "extended" in item:
            out.append(item["extended"])
    return out


def relay_rank(sql: str) -> int:
    """The rank (index in KINDS) the relay's classifier gives `sql`: its most dangerous statement."""
    return max(KINDS.index(op.kind) for op in operations(sql, "corpus"))
