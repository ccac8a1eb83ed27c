"""pgbench through the relay, in each of its query modes."""
from __future__ import annotations

import os
import re
import subprocess

import pytest


@pytest.fixture(scope="module")
def pgbench_tables(world):
    env = {**os.environ, "PGPASSWORD": world.target.passwords["scram"]}
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", "5432",
                    "-U", world.target.roles["scram"], world.target.db],
                   env=env, check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only(relay, agent, pgbench_tables, mode):
    env = {**os.environ, "PGPASSWORD": agent, "PGSSLMODE": "require"}
    r = subprocess.run(["pgbench", "-n", "-S", "-M", mode, "-c", "4", "-j", "2", "-t", "150",
                        "-h", relay.host, "-p", str(relay.port), "-U", "agent", "app"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"number of transactions actually processed: 600/600", r.stdout), r.stdout
    assert re.search(r"number of failed transactions: 0 ", r.stdout), r.stdout
