"""Fail closed: with the store unreachable, requests get 503 with a clear message and
nothing reaches the upstream, whether the store is gone from the start or goes away
under an open tunnel."""
from __future__ import annotations

import socket
import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
import requests

from app.db import session_scope
from app.identity import issue_token
from app.inventory import apply_policy
from app.migrate import upgrade
from app.policy import load_policy
from tests.conftest import PG_ADMIN_DSN
from tests.integration.http.clients import basic, connect
from tests.integration.http.conftest import POLICY, UPSTREAM_KEY, UPSTREAM_TOKEN, _use, free_port, start_proxy, \
    stop_proxy


@pytest.fixture
def dead_store_proxy(world, tmp_path):
    env = {**world.env, "AIRLOCK_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/airlock"}
    proxy = start_proxy(env, tmp_path / "proxy.log")
    yield proxy
    stop_proxy(proxy)


def test_with_no_store_a_connect_gets_503_and_nothing_is_forwarded(dead_store_proxy, world, agent):
    before = len(world.upstream.seen)
    sock, reply = connect(dead_store_proxy.port, "localhost", world.upstream.port, basic("agent", agent))
    sock.close()
    assert reply.status == 503
    with requests.Session() as s:
        s.trust_env = False
        r = s.get(f"http://localhost:{world.plain.port}/echo/no-store",
                  proxies={"http": dead_store_proxy.url("agent", agent)}, timeout=30)
    assert r.status_code == 503
    assert r.json()["error"] == "unavailable" and "store" in r.json()["message"]
    assert len(world.upstream.seen) == before and world.plain.requests_to("/echo/no-store") == []


class Relay:
    """A TCP forwarder to PostgreSQL that a test can cut, like a network partition."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.open:
                    client.close()
                    return
                upstream = socket.create_connection(self.target)
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            self.open = False
            try:  # close() alone does not wake a thread blocked in accept()
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            # Shut down, never close: the pipe threads may be inside send() on these, and
            # a closed descriptor's number goes to the next file opened (a SQLite store's,
            # say). Each socket closes when the last pipe thread using it lets go.
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets = []


@pytest.fixture
def pg_world(world, tmp_path):
    name = f"airlock_http_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    env = {**world.env, "AIRLOCK_DATABASE_URL": url}
    try:
        _use(env)
        upgrade(url)
        with session_scope() as s:
            apply_policy(s, load_policy(POLICY.format(port=world.upstream.port, plain_port=world.plain.port,
                                                      raw_port=world.raw.port, h2_port=world.h2.port,
                                                      ca=world.upstream_ca)),
                         actor="test", environ={"UPSTREAM_TOKEN": UPSTREAM_TOKEN, "UPSTREAM_KEY": UPSTREAM_KEY})
            token = issue_token(s, "agent", timedelta(hours=1)).token
        yield name, env, token
    finally:
        _use(world.env)
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_a_store_that_goes_away_under_an_open_tunnel_turns_requests_into_503(pg_world, world, tmp_path):
    name, env, token = pg_world
    relay = Relay(("127.0.0.1", 5432))
    proxy = start_proxy({**env, "AIRLOCK_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{relay.port}/{name}"},
                        tmp_path / "proxy.log")
    path = f"/echo/partition-{uuid.uuid4().hex[:8]}"
    api = f"https://localhost:{world.upstream.port}"
    try:
        with proxy.httpx(token) as c:
            assert c.get(f"{api}{path}").status_code == 200
            relay.cut()
            time.sleep(1.2)  # the gate re-reads the store version at least every 0.5 s
            statuses = [c.get(f"{api}{path}") for _ in range(3)]
        assert [r.status_code for r in statuses] == [503] * 3, [r.text for r in statuses]
        assert all(r.json()["error"] == "unavailable" for r in statuses)
        sock, reply = connect(proxy.port, "localhost", world.upstream.port, basic("agent", token))
        sock.close()
        assert reply.status == 503
        assert len(world.upstream.requests_to(path)) == 1  # only the one before the cut
    finally:
        stop_proxy(proxy)
        relay.cut()
