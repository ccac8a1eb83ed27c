"""The MySQL corpus runs through the relay of tests/integration/mysql (its fixtures)."""
from tests.integration.mysql.conftest import _store, relay, target, world  # noqa: F401
