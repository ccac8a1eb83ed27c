"""The SSH bypass corpus runs on the SSH relay suite's sshd, store and relay."""
from tests.integration.ssh.conftest import _store, relay, sshd, world  # noqa: F401 - fixtures
