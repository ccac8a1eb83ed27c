"""Folders that sit beside the package in a checkout, found in a checkout and in an
installed wheel alike.

templates/ and migrations/ stay at the top of the checkout (the layout users asked
for); setup.py copies them into the wheel, below app/. node_modules/ (the portal's
browser assets from npm) exists only in a checkout where `make install` ran.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent


def _bundled(installed: Path, checkout: Path) -> Path:
    # The installed copy wins: a wheel installed into a tree that happens to hold a
    # stale checkout folder beside it must not serve that folder.
    return installed if installed.is_dir() else checkout


TEMPLATES = _bundled(PACKAGE / "portal" / "templates", CHECKOUT / "templates")
MIGRATIONS = _bundled(PACKAGE / "migrations", CHECKOUT / "migrations")
NODE_MODULES = CHECKOUT / "node_modules"
