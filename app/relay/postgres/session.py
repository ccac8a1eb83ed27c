"""One PostgreSQL relay session: a PostgreSQL server to a runtime, a client to its target.

A connection (accepted by listener.py) goes: TLS (SSLRequest or direct TLS) -> StartupMessage -> cleartext
password (the token) -> gate.authenticate -> the connection named by `dbname` ->
startup settings checked as SET statements -> login to the target -> `Conversation`
relays statements, `TargetStream` relays answers. Anything unexpected ends this one
connection with a FATAL error; the listener and every other session carry on. What the
conversation uses of its session is `ConversationSession` (conversation.py).
"""
from __future__ import annotations

import asyncio
import logging
import struct
from typing import Callable

from sqlalchemy.exc import SQLAlchemyError

from app.gate import Unavailable
from app.identity import AuthError

from ..listener import client_addr
from ..session import RelaySession, SessionEnd
from . import auth, protocol
from .answers import answer_json
from .checks import StatementChecker
from .conversation import Conversation
from .parity import startup_divergence
from .protocol import ProtocolError, error_response
from .reason import TOOL_NAMES, split_app_name
from .wire import ConnectionClosed, Wire

log = logging.getLogger(__name__)


_NOT_FORWARDED = ("user", "database", "replication")
SETTLE_SECONDS = 30.0  # how long a session outlives its client, to record what it had sent


class Session(RelaySession):
    protocol = "postgres"

    def __init__(self, relay, client: Wire, addr, use_tls: bool):
        super().__init__(client_addr(addr))
        self.relay = relay  # the PostgresRelay: its sessions by key, its cancels, its worker link
        self.cfg = relay.cfg
        self.client = client
        self.tls = use_tls
        self.key: tuple[int, int] = (0, 0)  # BackendKeyData: the target's pid, our secret
        self.link: auth.TargetLink | None = None
        self.conv: Conversation | None = None
        self._ending = False

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.cfg.login_timeout):
                if not await self._login():
                    return
            self.relay.sessions[self.key] = self
            try:
                await self.conv.start()
            except ConnectionClosed:
                await self._settle_in_flight()
                raise
        except (ConnectionClosed, SessionEnd, asyncio.CancelledError):
            pass
        except ProtocolError as exc:
            self.fatal(exc.sqlstate, f"airlock: {exc}")
        except TimeoutError:
            self.fatal("08006", "airlock: login took too long")
        except SQLAlchemyError as exc:  # the store failed after the credential was checked
            log.warning("postgres session from %s: store unavailable: %s", self.client_addr, type(exc).__name__)
            self.fatal("57P03", "airlock: the airlock store is unavailable; try again shortly")
        except Exception:
            log.exception("postgres session from %s failed", self.client_addr)
            self.fatal("XX000", "airlock: internal error in the relay; the connection is closed")
        finally:
            self._end()

    # -- login ------------------------------------------------------------------------

    async def _login(self) -> bool:
        body = await self.client.read_startup()
        version = protocol.unpack_i32(body, 0)[0]
        if version == protocol.CANCEL_REQUEST and len(body) == 12:  # a cancel sent over TLS
            self.relay.cancel(*struct.unpack_from("!ii", body, 4))
            return False
        if version >> 16 != 3:
            return self.fatal("0A000", "airlock: unsupported frontend protocol (or a TLS request inside TLS)")
        params = protocol.parse_startup_params(body)
        unsupported = [k for k in params if k.startswith("_pq_.")]
        if version & 0xFFFF or unsupported:
            self.client.write(protocol.negotiate_protocol_version(0, unsupported))
        self.user = params.get("user", "")
        self.connection_name = params.get("database") or self.user
        if not self.tls and not self.cfg.allow_plaintext:
            return self.fatal("28000", "airlock: TLS is required; connect with sslmode=require",
                              hint="the token is a password: it is never accepted over an unencrypted connection")
        if params.get("replication", "false").lower() not in ("false", "0", "no", "off"):
            return self.fatal("0A000", "airlock: replication connections are not relayed")
        self.client.write(protocol.auth_request(3))
        kind, body, _ = await self.client.read_frame()
        if kind != 0x70:  # p
            raise ProtocolError("expected a password message")
        token, _ = protocol.cstring(body, 0)
        try:
            await self.authenticate(token, claimed=self.user)
        except AuthError as exc:
            log.info("postgres login refused for %r from %s: %s", self.user, self.client_addr, exc.reason)
            return self.fatal("28P01", f'password authentication failed for user "{self.user}"', detail=exc.reason)
        except Unavailable as exc:
            return self.fatal("57P03", str(exc))
        target = await self.gate.target(self.connection_name)
        if target is None or target.type != "postgres":
            return self.fatal("3D000", f'airlock: connection "{self.connection_name}" does not exist')
        await self.granted()  # from here on the grant watcher ends this session when its grant goes
        app_name, self.reason = split_app_name(params.get("application_name", ""))
        self.run_id = app_name if app_name and app_name not in TOOL_NAMES else None
        self.open_recording({"tls": self.tls, "user": self.user})
        forwarded = {k: v for k, v in params.items() if k not in _NOT_FORWARDED and not k.startswith("_pq_.")}
        refused = startup_divergence(forwarded) or await self.statement_checker(
            self.client.write, lambda: None).check_settings(forwarded)
        if refused is not None:
            return self.fatal("42501", f"airlock: {refused}")
        cfg = target.config
        password = target.secrets.get("password")
        try:
            self.link = await auth.connect(
                cfg["address"], database=cfg.get("database") or self.connection_name, username=cfg["username"],
                password=password.reveal() if password is not None else None, params=forwarded,
                tls_mode=self.cfg.target_tls, max_frame=self.cfg.max_message)
        except auth.TargetError as exc:
            return self.fatal(exc.sqlstate, f"airlock: {exc.message}")
        self.conv = Conversation(self, self.client, self.link.wire, self.cfg)
        self.key = self.relay.link.new_key(self.link.pid)
        while self.key in self.relay.sessions:  # two targets may reuse a pid; keys stay unique here
            self.key = self.relay.link.new_key(self.link.pid)
        out = [protocol.auth_request(0), *self.link.parameters, protocol.backend_key_data(*self.key),
               protocol.ready_for_query(self.link.status)]
        self.client.write(b"".join(out))
        for frame in self.link.parameters:
            self.conv.parameter_changed(frame[5:])
        wire = self.link.wire
        wire.on_lost = self._target_lost
        self.client.peer = wire  # a slow client pauses reading from the target
        wire.on_data = self.conv.stream.data
        leftover = wire.take_buffer()
        if leftover:
            self.conv.stream.data(leftover)
        if wire.lost:
            self._target_lost(None)
        return True

    # -- during the session -------------------------------------------------------

    async def _settle_in_flight(self) -> None:
        """The client left with statements in flight. They run on the target all the same,
        so keep listening (for a while) and record each with its outcome."""
        link = self.link
        if link is None or link.wire.lost:
            return
        done = self.conv.stream.drain()
        if done is not None:
            link.wire.transport.resume_reading()  # it may have paused for the client's sake
            try:
                await asyncio.wait_for(done, SETTLE_SECONDS)
            except TimeoutError:
                log.info("postgres session %s: statements still running after the client left", self.client_addr)

    def refuse_token(self, reason: str, *, expired: bool) -> None:
        if expired:
            self.fatal("28P01", "airlock: the session's token has expired", detail=reason)
        else:
            self.fatal("28P01", "airlock: the session's token is no longer valid", detail=reason)

    def client_gone(self) -> bool:
        return bool(self.client.lost)

    def watch_client(self, on_lost: Callable[[object], None]) -> None:
        self.client.on_lost = on_lost

    def statement_checker(self, send: Callable[[bytes], None], flush: Callable[[], None]) -> StatementChecker:
        """A checker of this session's statements (checks.py), on the core's checker."""
        return StatementChecker(self, send, flush)

    def record_answer(self, sql: str, rule: str | None, masks: list[str], ms: float, answer: bytes,
                      sample_rows: int, masked: int = 0) -> None:
        """A simple query's output event, built from its raw answer by the writer;
        `masked`: how many values masking replaced in it."""
        if self.rec is not None:
            if masked:
                self.rec.event_later("output", answer_json, sql, rule, masks, ms, answer, sample_rows, masked)
            else:
                self.rec.event_later("output", answer_json, sql, rule, masks, ms, answer, sample_rows)

    def tag_application(self, app_name: str) -> None:
        """application_name `RUN_ID | reason` names the agent's run and its reason."""
        run_id, reason = split_app_name(app_name)
        if reason:
            self.reason = reason
        self.tag_run(run_id)

    def cancel(self) -> None:
        if self.conv is not None and self.conv.cancel():
            return
        link = self.link
        if link is not None:
            asyncio.get_running_loop().create_task(auth.send_cancel(link.host, link.port, link.pid, link.secret))

    def lost_track(self, reason: str) -> None:
        log.warning("postgres session %s: %s; closing it", self.client_addr, reason)
        self.fatal("08P01", "airlock lost track of the conversation with the target; the connection is closed")
        self._close_wires()

    def _target_lost(self, exc) -> None:
        if not self._ending:
            self.fatal("08006", "airlock: the connection to the target was lost")
            self._close_wires()

    def fatal(self, sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None) -> bool:
        """Tell the client why the connection ends (at a frame boundary). Returns False."""
        frame = error_response(sqlstate, message, severity="FATAL", detail=detail, hint=hint)
        if self.conv is not None:
            self.conv.stream.send(frame)
        else:
            self.client.write(frame)
        self.record("notice", {"fatal": sqlstate, "message": message})
        return False

    def grant_gone(self) -> None:
        if self._ending:
            return
        self.fatal("42501", f'airlock: the grant of "{self.principal.service_account}" on "{self.connection_name}" was '
                            "revoked or has expired; the session is closed")
        self._close_wires()

    def shutdown(self) -> None:
        self.fatal("57P01", "airlock: the relay is shutting down")
        self._close_wires()

    def _close_wires(self) -> None:
        self._ending = True
        self.client.close()
        if self.link is not None:
            self.link.wire.close()

    def _end(self) -> None:
        self._ending = True
        if self.relay.sessions.get(self.key) is self:
            del self.relay.sessions[self.key]
        if self.link is not None and not self.link.wire.lost:
            self.link.wire.write(protocol.frame(b"X"))
        self._close_wires()
        if self.rec is not None:
            conv = self.conv
            self.rec.close(statements=conv.statements if conv else 0, refused=conv.refused if conv else 0,
                           lane=conv.lane_statements if conv else 0)
