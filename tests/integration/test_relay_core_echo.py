"""The relay core is protocol-neutral: a line-based echo protocol, written on it in a few
dozen lines (between the markers below), gets identity (a token), a deny rule, a hold
that a reviewer approves from another thread, and recording, as PostgreSQL does.

The protocol: `LOGIN <token> <connection>` first, then every line is an operation,
answered `ECHO <line>`, `HELD <review> <url>` (then the echo, or the refusal) or
`NO <reason>`."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.approvals import vote
from app.db import session_scope
from app.identity import issue_token
from app.inventory import apply_policy
from app.models import RecordedSession, Review, SessionEvent
from app.policy import load_policy
from app.recording import recorder, reset_recorder
from app.relay.listen import bind

# -- the echo protocol: everything a protocol writes on the core ---------------------------
from app.identity import AuthError
from app.relay.checker import Checker
from app.relay.listener import Listener, client_addr
from app.relay.session import RelaySession, SessionEnd
from app.relay.transport import ConnectionClosed, Transport
from app.types import Operation


class EchoListener(Listener):
    protocol = "ssh"  # the rule language knows ssh commands; the echo's lines are such commands

    async def connection(self, sock: socket.socket, addr) -> None:
        wire = Transport(max_frame=4096)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: wire, sock)
        session = EchoSession(wire, client_addr(addr))
        self.sessions[id(session)] = session
        try:
            await session.run()
        except (ConnectionClosed, SessionEnd):
            pass
        finally:
            del self.sessions[id(session)]
            wire.close()
            if session.rec is not None:
                session.rec.close()


class EchoSession(RelaySession):
    protocol = "ssh"

    def __init__(self, wire: Transport, addr: str) -> None:
        super().__init__(addr)
        self.wire = wire
        self.checker = Checker(self, on_hold=lambda review, url: self.say(f"HELD {review} {url}"))

    def say(self, line: str) -> None:
        self.wire.write(line.encode() + b"\n")

    async def run(self) -> None:
        _, token, self.connection_name = (await self.wire.read_line()).decode().split()
        try:
            await self.authenticate(token, claimed=None)
        except AuthError as exc:
            return self.say(f"NO {exc.reason}")
        if not await self.granted():
            return self.say(f"NO no grant on {self.connection_name}")
        self.open_recording({"echo": True})
        self.say("OK")
        while True:
            line = (await self.wire.read_line()).decode()
            op = Operation("ssh", self.connection_name, "read", text=line, command=line)
            verdict = await self.checker.decide(op, hold=30)
            if not verdict.allowed:
                self.say(f"NO {verdict.rule}: {verdict.message}")
                continue
            self.record("output", {"text": line})
            self.say(f"ECHO {line}")

    def refuse_token(self, reason: str, *, expired: bool) -> None:
        self.say(f"NO token: {reason}")

    def grant_gone(self) -> None:
        self.say("NO grant gone")
        self.wire.close()

    def client_gone(self) -> bool:
        return bool(self.wire.lost)

    def watch_client(self, on_lost) -> None:
        self.wire.on_lost = on_lost

    def shutdown(self) -> None:
        self.wire.close()
# -- end of the echo protocol ---------------------------------------------------------------


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
POLICY = f"""
version: 1
service_accounts:
  - {{name: bot}}
  - {{name: nobody}}
users:
  - {{email: ops@example.com, groups: [ops], roles: [approver]}}
connections:
  - {{name: box, type: ssh, address: "127.0.0.1:22", username: u, password: "pw", host_key: "{KEY}"}}
grants:
  - {{service_account: bot, connection: box}}
rules:
  - name: no-rm
    match: {{protocol: ssh, command: ["rm *"]}}
    action: deny
    message: nothing is deleted here
  - name: restarts
    match: {{protocol: ssh, command: ["restart *"]}}
    action: review
    approvers: {{groups: [ops]}}
"""


@pytest.fixture
def echo(sqlite_store):
    reset_recorder()  # the process's recorder writes to this test's store
    with session_scope() as s:
        apply_policy(s, load_policy(POLICY), actor="test", environ={})
        tokens = {name: issue_token(s, name, timedelta(hours=1)).token for name in ("bot", "nobody")}
    sockets = bind("127.0.0.1", 0)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = loop.create_future()

    async def serve():
        listener = EchoListener().serve_on(sockets)
        started.set()
        await stop
        listener.shutdown_sessions()
        listener.close()
        await listener.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield sockets[0].getsockname()[1], tokens
    loop.call_soon_threadsafe(stop.set_result, None)
    thread.join(10)
    loop.close()
    reset_recorder()


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.lines = self.sock.makefile("r", encoding="utf-8")

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.read()

    def read(self) -> str:
        return self.lines.readline().rstrip("\n")


def test_identity_deny_hold_and_recording_work_through_the_core(echo):
    port, tokens = echo
    assert Client(port).ask("LOGIN not-a-token box").startswith("NO ")
    assert Client(port).ask(f"LOGIN {tokens['nobody']} box") == "NO no grant on box"

    c = Client(port)
    assert c.ask(f"LOGIN {tokens['bot']} box") == "OK"
    assert c.ask("ls /tmp") == "ECHO ls /tmp"
    assert c.ask("rm /etc/passwd") == "NO no-rm: nothing is deleted here"

    held = c.ask("restart api")
    assert held.startswith("HELD "), held
    review_id = int(held.split()[1])
    voter = threading.Thread(target=_approve, args=(review_id,))  # the reviewer, elsewhere
    voter.start()
    assert c.read() == "ECHO restart api"
    voter.join(10)

    recorder().flush()
    with session_scope() as s:
        rows = s.execute(select(RecordedSession, SessionEvent)
                         .join(SessionEvent, SessionEvent.session_id == RecordedSession.id)
                         .order_by(SessionEvent.seq)).all()
    assert {r.service_account for r, _ in rows} == {"bot"}
    recorded = [(e.kind, json.loads(e.data)) for _, e in rows]
    assert [d["text"] for kind, d in recorded if kind == "output"] == ["ls /tmp", "restart api"]
    assert ("notice", {"review_id": review_id, "review_url": held.split()[2]}) in recorded


def _approve(review_id: int) -> None:
    # The client has been told of the hold, so the gate is waiting: the vote must wake it.
    with session_scope() as s:
        vote(s, review_id, voter_email="ops@example.com", decision="approve")
    with session_scope() as s:
        assert s.get(Review, review_id).status == "approved"
