"""Promises across nodes: a hold on one node approved through another's portal; a
revoke and a policy change reaching open sessions on the other nodes within 1 s."""
from __future__ import annotations

import re
import ssl
import threading
import time
from datetime import datetime, timezone

import httpx
import psycopg
from sqlalchemy import select

from app.db import session_scope
from app.models import StoreVersion

from .probe import Probe

PROMISE = 1.0


def held_statement(conn: psycopg.Connection, sql: str):
    """Run `sql` on a thread; returns (thread, result, notices)."""
    notices: list[str] = []
    noticed = threading.Event()
    result: dict = {}

    def on_notice(diag) -> None:
        notices.append(f"{diag.message_primary} {diag.message_detail or ''}")
        noticed.set()

    conn.add_notice_handler(on_notice)

    def run() -> None:
        try:
            result["rowcount"] = conn.execute(sql).rowcount
        except Exception as exc:  # noqa: BLE001 - the test reads it
            result["error"] = exc
        result["done"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert noticed.wait(20), f"no review notice: {result}"
    review_id = int(re.search(r"/reviews/(\d+)", notices[0]).group(1))
    return thread, result, review_id


def http_client(cluster, proxy, token: str, user: str = "agent") -> httpx.Client:
    return httpx.Client(proxy=proxy.url(user, token), verify=ssl.create_default_context(cafile=str(proxy.ca)),
                        trust_env=False, timeout=60)


def pending_review(cluster, portal, needle: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = cluster.api(portal, "GET", "/reviews?status=pending")
        assert status == 200, body
        for item in body["items"]:
            if needle in item["operation"]:
                return item
        time.sleep(0.05)
    raise AssertionError(f"no pending review for {needle!r}")


def test_a_hold_on_relay_a_is_approved_through_portal_b(cluster):
    relay_a, portal_b = cluster.relays[0], cluster.portals[1]
    with psycopg.connect(cluster.dsn(relay_a, cluster.tokens["agent"]), autocommit=True) as conn:
        thread, result, review_id = held_statement(conn, "DELETE FROM orders WHERE id = 7")
        with cluster.target() as t:
            assert t.execute("SELECT count(*) FROM orders WHERE id = 7").fetchone() == (1,)  # held, not run
        status, body = cluster.api(portal_b, "POST", f"/reviews/{review_id}/vote", body={"decision": "approve"})
        voted = time.monotonic()
        assert status == 200 and body["status"] == "approved", body
        thread.join(20)
    assert result.get("rowcount") == 1, result
    print(f"approval on portal B -> hold on relay A released in {(result['done'] - voted) * 1000:.0f} ms")
    assert result["done"] - voted < PROMISE
    with cluster.target() as t:
        assert t.execute("SELECT count(*) FROM orders WHERE id = 7").fetchone() == (0,)


def test_a_hold_on_proxy_b_is_approved_through_portal_a(cluster):
    proxy_b, portal_a = cluster.proxies[1], cluster.portals[0]
    api = f"https://localhost:{cluster.upstream.port}"
    result: dict = {}
    with http_client(cluster, proxy_b, cluster.tokens["agent"]) as client:
        thread = threading.Thread(target=lambda: result.update(
            resp=client.post(f"{api}/deploy/mn-release", json={"v": 1}), done=time.monotonic()), daemon=True)
        thread.start()
        review = pending_review(cluster, portal_a, "/deploy/mn-release")
        assert not cluster.upstream.requests_to("/deploy/mn-release")  # held, not sent
        status, body = cluster.api(portal_a, "POST", f"/reviews/{review['id']}/vote", body={"decision": "approve"})
        voted = time.monotonic()
        assert status == 200 and body["status"] == "approved", body
        thread.join(20)
    assert result["resp"].status_code == 200, result["resp"].text
    assert len(cluster.upstream.requests_to("/deploy/mn-release")) == 1
    assert result["done"] - voted < PROMISE


def _prepared_probe(conn: psycopg.Connection) -> Probe:
    return Probe(lambda: conn.execute("SELECT id FROM t WHERE id = %s", (1,), prepare=True).fetchone() == (1,))


def _http_probe(client: httpx.Client, url: str) -> Probe:
    return Probe(lambda: client.get(url).status_code == 200)


def _bump_moment() -> float:
    """When the last version bump committed, on this process's monotonic clock (the
    bump is written by another process on this host)."""
    with session_scope() as s:
        at = s.scalar(select(StoreVersion.updated_at).where(StoreVersion.name == "policy"))
    return time.monotonic() - (datetime.now(timezone.utc) - at).total_seconds()


def test_a_revoke_on_portal_b_reaches_open_sessions_on_relay_a_and_proxy_a(cluster):
    relay_a, proxy_a, portal_b = cluster.relays[0], cluster.proxies[0], cluster.portals[1]
    api = f"https://localhost:{cluster.upstream.port}"
    conn = psycopg.connect(cluster.dsn(relay_a, cluster.tokens["worker"], user="worker"), autocommit=True)
    client = http_client(cluster, proxy_a, cluster.tokens["worker"], user="worker")
    pg, http = _prepared_probe(conn).start(), _http_probe(client, f"{api}/mn/worker").start()
    try:
        pg.wait_through(5)
        http.wait_through(5)
        status, body = cluster.api(portal_b, "GET", "/grants", who="admin@example.com")
        assert status == 200, body
        ids = {g["connection"]: g["id"] for g in body["items"] if g["service_account"] == "worker"}
        delays = {}
        for connection, probe in (("api", http), ("db", pg)):
            status, body = cluster.api(portal_b, "POST", f"/grants/{ids[connection]}/revoke", who="admin@example.com")
            assert status == 200 and body["state"] == "revoked", body
            committed = _bump_moment()
            delays[connection] = probe.refusal_after(committed)
            time.sleep(0.2)
            assert not probe.through_after(committed + PROMISE)
    finally:
        pg.stop()
        http.stop()
        conn.close()
        client.close()
    print(f"grant revoke on portal B -> refusal on proxy A {delays['api'] * 1000:.0f} ms, "
          f"relay A (prepared) {delays['db'] * 1000:.0f} ms")
    assert max(delays.values()) < PROMISE, delays


FREEZE = """
  - name: mn-freeze
    match: {protocol: postgres, tables: [t]}
    action: deny
    message: t is frozen
  - name: mn-freeze-http
    match: {connection: api, path: "/mn/*"}
    action: deny
    message: frozen
"""


def test_a_policy_change_reaches_open_sessions_on_every_node(cluster):
    api = f"https://localhost:{cluster.upstream.port}"
    token = cluster.tokens["agent"]
    conns = [psycopg.connect(cluster.dsn(r, token), autocommit=True) for r in cluster.relays]
    clients = [http_client(cluster, p, token) for p in cluster.proxies]
    probes = [_prepared_probe(c) for c in conns] + [_http_probe(c, f"{api}/mn/agent") for c in clients]
    for p in probes:
        p.start()
    try:
        for p in probes:
            p.wait_through(5)
        cluster.apply(FREEZE)
        committed = _bump_moment()
        delays = [p.refusal_after(committed) for p in probes]
        time.sleep(0.2)
        for p in probes:
            assert not p.through_after(committed + PROMISE)
    finally:
        for p in probes:
            p.stop()
        cluster.apply()
        for c in conns:
            c.close()
        for c in clients:
            c.close()
    print("policy change -> refusal (relay A, relay B, proxy A, proxy B): "
          + ", ".join(f"{d * 1000:.0f} ms" for d in delays))
    assert max(delays) < PROMISE, delays
    assert any("mn-freeze" in e for e in probes[0].errors), probes[0].errors[-2:]
