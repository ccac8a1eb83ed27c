"""The relay fixtures of tests/integration/postgres (real server, real relay), shared."""
from tests.integration.postgres.conftest import (_store, agent, relay, target, world)  # noqa: F401

__all__ = ["_store", "agent", "relay", "target", "world"]
