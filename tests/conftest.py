"""Shared fixtures: a migrated store on SQLite and on the real PostgreSQL server; and the
markers that sort the tests into tiers (see README, "Running the tests")."""
from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from _pytest.mark.expression import Expression  # what `-m` itself evaluates
from cryptography.fernet import Fernet
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text

from app import db
from app.config import settings
from app.migrate import upgrade
from app.models import Base
from tests.support import leaks

PG_ADMIN_DSN = os.environ.get("AIRLOCK_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
_SECRET = Fernet.generate_key().decode()

# Property tests judge what an example does, never how long it took: on a busy 2-core CI
# machine hypothesis's wall-clock deadline and its "too slow" check fail good code.
hypothesis_settings.register_profile("airlock", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("airlock")


def _configure(monkeypatch: pytest.MonkeyPatch, home: Path, url: str) -> None:
    # Start from a clean slate: session-scoped fixtures of other suites may have set
    # AIRLOCK_* variables that would otherwise leak into this test.
    for name in [k for k in os.environ if k.startswith("AIRLOCK_") and k != "AIRLOCK_TEST_PG_DSN"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AIRLOCK_HOME", str(home))
    monkeypatch.setenv("AIRLOCK_DATABASE_URL", url)
    monkeypatch.setenv("AIRLOCK_SECRET_KEY", _SECRET)
    monkeypatch.setenv("AIRLOCK_BUS_POLL_SECONDS", "0.02")
    settings.cache_clear()
    db.reset_engines()


def use_store(env: dict[str, str]) -> None:
    """Point this process at a suite's store (other suites may have pointed it elsewhere)."""
    os.environ.update(env)
    current = settings()
    if current.database_url != env["AIRLOCK_DATABASE_URL"] or str(current.home) != env["AIRLOCK_HOME"]:
        settings.cache_clear()
        db.reset_engines()


@contextmanager
def suite_store(base: Path, template: Path) -> Iterator[dict[str, str]]:
    """A store shared by a whole suite (a proxy or relay subprocess runs against it):
    yields its environment, applied to this process, and puts the old one back after."""
    home = base / "home"
    home.mkdir()
    shutil.copy(template, home / "airlock.db")
    env = {
        "AIRLOCK_HOME": str(home),
        "AIRLOCK_DATABASE_URL": f"sqlite:///{home / 'airlock.db'}",
        "AIRLOCK_SECRET_KEY": Fernet.generate_key().decode(),
        "AIRLOCK_BUS_POLL_SECONDS": "0.02",
        "AIRLOCK_RECORD_FLUSH_SECONDS": "0.1",
        "AIRLOCK_PUBLIC_URL": "http://portal.test",
    }
    saved = {k: os.environ.get(k) for k in env}
    use_store(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        settings.cache_clear()
        db.reset_engines()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "airlock.db"
    upgrade(f"sqlite:///{path}")
    db.reset_engines()
    return path


@pytest.fixture(scope="session")
def pg_database() -> str:
    name = f"airlock_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    db.reset_engines()
    yield url
    db.reset_engines()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate_pg(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    eng = db.engine_for(url)
    with eng.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch, sqlite_template) -> str:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(sqlite_template, home / "airlock.db")
    url = f"sqlite:///{home / 'airlock.db'}"
    _configure(monkeypatch, home, url)
    yield url
    db.reset_engines()


@pytest.fixture
def pg_store(tmp_path, monkeypatch, pg_database) -> str:
    home = tmp_path / "home"
    home.mkdir()
    _configure(monkeypatch, home, pg_database)
    _truncate_pg(pg_database)
    yield pg_database
    db.reset_engines()


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.postgres)])
def store(request) -> str:
    """A migrated, empty store: the test runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_store")


# -- leaks ---------------------------------------------------------------------------
# A server subprocess that a test or fixture fails to stop keeps its port, its store and
# a core of CI's two. Every process the run starts carries a tag (tests/support/leaks.py);
# after the last fixture has stopped, none may be left, and the run fails naming each
# one and the module after which it was first seen still running.

_RUN_TAG = leaks.install()
_FIRST_SEEN: dict[tuple[int, int], str] = {}


@pytest.fixture(scope="module", autouse=True)
def _note_processes_outliving_the_module(request):
    yield
    for proc in leaks.survivors(_RUN_TAG, quick=True):  # about a millisecond
        _FIRST_SEEN.setdefault((proc.pid, proc.started), request.module.__name__)


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_run():
    yield  # set up before, so torn down after, every other session fixture
    left = leaks.wait_for_exit(_RUN_TAG, timeout=10)
    if not left:
        return
    report = "\n".join(f"  {p}\n    still running after {_FIRST_SEEN.get((p.pid, p.started), 'the last module')}"
                       for p in left)
    for proc in left:  # reported; do not let them outlive the run too
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pytest.fail(f"processes started by the tests outlived them:\n{report}", pytrace=False)


# -- tiers ---------------------------------------------------------------------------
# What a test needs is read from where it lives and which fixtures it uses, so a new test
# is marked without anyone remembering to. The quick tier (make test-quick) leaves out
# every marked test: what stays is the example tests of the pure modules and the gate,
# on SQLite, in one process. A server a marker names is started only by marked tests.

_SUITES = {  # tests/<path>: what every test in it needs
    "integration/postgres/": ("postgres", "slow"),
    "corpus/postgres/": ("postgres", "slow"),
    "integration/multinode/": ("postgres", "slow"),
    "integration/mysql/": ("mariadb", "slow"),
    "corpus/mysql/": ("mariadb", "slow"),
    "integration/ssh/": ("sshd", "slow"),
    "corpus/ssh/": ("sshd", "slow"),
    "browser/": ("chromium", "slow"),
    # Subprocess suites (proxy, scheduler, portal, CLI, Slack worker) and their waits:
    "integration/http/": ("slow",),
    "integration/scheduler/": ("slow",),
    "integration/slack/": ("slow",),
    "integration/portal/": ("slow",),
    "integration/campaigns/": ("slow",),
    "integration/test_cli.py": ("slow",),
    "integration/test_first_hour.py": ("slow",),
    "integration/test_bus_wake.py": ("slow",),
    "integration/test_identity_oidc.py": ("slow",),
    "integration/test_identity_resilience.py": ("slow",),
    "integration/test_wheel.py": ("slow",),  # builds a wheel, installs it in a new virtualenv
}
_FIXTURES = {  # a fixture: what a test that uses it (directly or through another) needs
    "pg_database": "postgres",
    "pg_store": "postgres",
}
_TESTS = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m`, a suite none of whose tests can be selected is not even imported (the
    quick tier would otherwise spend most of its time collecting what it leaves out)."""
    expr = config.option.markexpr
    if not expr:
        return None
    try:
        rel = collection_path.resolve().relative_to(_TESTS).as_posix() + ("/" if collection_path.is_dir() else "")
    except ValueError:
        return None
    marks = next((set(m) for path, m in _SUITES.items() if rel.startswith(path)), None)
    if marks is None:
        return None
    compiled = Expression.compile(expr)
    # A test may carry marks beyond its suite's: leave the suite out only if no such
    # extra marks (of the names the expression uses) could select any of its tests.
    names = set(re.findall(r"[A-Za-z_][\w.-]*", expr)) - {"and", "or", "not"} - marks
    for n in range(len(names) + 1):
        for extra in itertools.combinations(sorted(names), n):
            have = marks | set(extra)
            if compiled.evaluate(lambda name, **_kw: name in have):
                return None
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            rel = Path(str(item.path)).resolve().relative_to(_TESTS).as_posix()
        except ValueError:
            continue
        for path, marks in _SUITES.items():
            if rel.startswith(path):
                for mark in marks:
                    item.add_marker(mark)
        for name in getattr(item, "fixturenames", ()):
            if name in _FIXTURES:
                item.add_marker(_FIXTURES[name])
        # A property test (hypothesis) runs hundreds of examples; the example tests of the
        # same module stay in the quick tier.
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker("slow")
