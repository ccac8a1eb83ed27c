"""Every PostgreSQL bypass attempt in cases.yaml, through the real relay to the real server.

One parametrised test: each case is sent as written (pipelined items in one write), each
answer is read up to its ReadyForQuery and named (allowed, refused, denied:RULE, held),
the relay's classifier must rate the most dangerous statement sent at least the case's kind, and the
table every hidden DROP aims at must still be there afterwards.
"""
from __future__ import annotations

import struct

import pytest

from app.relay.postgres import protocol as pgwire
from app.types import KINDS
from tests.integration.postgres.conftest import target_rows
from tests.integration.postgres.rawclient import RawClient, error_fields

from .corpus import CASES, relay_rank, texts

SETUP = """
CREATE TABLE IF NOT EXISTS corpus_victim (id int);
CREATE SEQUENCE IF NOT EXISTS corpus_seq;
CREATE OR REPLACE PROCEDURE corpus_proc() LANGUAGE sql AS 'SELECT 1';
"""


@pytest.fixture
def corpus_db(world):
    with world.target.admin() as conn:
        conn.execute(f"SET ROLE {world.target.roles['scram']}")
        conn.execute(SETUP)
    yield world.target.db
    survived = target_rows(world.target, "SELECT to_regclass('corpus_victim') IS NOT NULL")
    assert survived == [(True,)], "a hidden statement dropped corpus_victim"


def _frames(item, db: str) -> bytes:
    if isinstance(item, str):
        return pgwire.frame(b"Q", item.replace("{db}", db).encode() + b"\0")
    if "hex" in item:
        return pgwire.frame(b"Q", bytes.fromhex(item["hex"]) + b"\0")
    if "extended" in item:
        bind = pgwire.frame(b"B", b"\0\0" + struct.pack("!hhh", 0, 0, 0))
        execute = pgwire.frame(b"E", b"\0" + struct.pack("!i", 0))
        return pgwire.parse_message("", item["extended"]) + bind + execute + pgwire.frame(b"S")
    if "function_call" in item:
        return pgwire.frame(b"F", struct.pack("!ihhh", item["function_call"], 0, 0, 0))
    raise ValueError(f"unknown corpus item {item!r}")


def outcome(messages: list[tuple[bytes, bytes]]) -> str:
    errors = [error_fields(body) for kind, body in messages if kind == b"E"]
    if not errors:
        return "allowed"
    message = errors[0].get("M", "")
    if message.startswith('airlock: denied by rule "'):
        return "denied:" + message.split('"')[1]
    if "is still pending" in message:
        return "held"
    if message.startswith("airlock"):
        return "refused"
    return f"error:{errors[0].get('C')}:{message}"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus_case(relay, agent, corpus_db, case):
    if case.get("kind"):
        sent = [t.replace("{db}", corpus_db) for t in texts(case)]
        assert max(map(relay_rank, sent)) >= KINDS.index(case["kind"]), f"classified below {case['kind']}: {sent!r}"
    c = RawClient(relay.host, relay.port)
    try:
        c.startup("agent", "app", **case.get("startup", {}))
        kind, body = c.read()
        assert kind == b"R", (kind, body)
        c.send(pgwire.frame(b"p", agent.encode() + b"\0"))
        if case["expect"] == "refused_login":
            kind, body = c.read()
            assert kind == b"E" and "is refused" in error_fields(body)["M"], (kind, body)
            return
        c.until_ready()
        send = case["send"]
        items = send if isinstance(send, list) else [send]
        expected = case["expect"] if isinstance(case["expect"], list) else [case["expect"]]
        c.send(b"".join(_frames(item, corpus_db) for item in items))
        got = [outcome(c.until_ready()) for _ in items]
        assert got == expected
        assert outcome(c.query("SELECT 1")) == "allowed"  # the session carries on
    finally:
        c.close()
