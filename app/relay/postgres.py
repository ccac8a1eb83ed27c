"""The PostgreSQL relay: a PostgreSQL server to runtimes, a client to targets.

    runtime --TLS, token as password--> relay --vault credential--> target

A connection goes: TLS (SSLRequest or direct TLS) -> StartupMessage -> cleartext
password (the token) -> gate.authenticate -> the connection named by `dbname` ->
startup settings checked as SET statements -> login to the target -> `Conversation`
relays statements, `TargetStream` relays answers. Anything unexpected ends this one
connection with a FATAL error; the listener and every other session carry on.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

from sqlalchemy.exc import SQLAlchemyError

from app.config import settings
from app.gate import Unavailable, get_gate
from app.identity import AuthError
from app.recording import recorder
from app.recording_store import compact_json

from . import pgauth, pgwire, tls
from .listen import bind
from .config import RelayConfig, relay_config
from .pganswer import answer_json
from .pgchecks import Checker
from .pgconv import _TOOL_NAMES, Conversation
from .pgparity import startup_divergence
from .pgreason import split_app_name
from .pgwire import ProtocolError, error_response
from .wire import ConnectionClosed, Wire
from .workers import WorkerLink

log = logging.getLogger(__name__)

_json = compact_json  # one event a statement: the C encoder, built once


_NOT_FORWARDED = ("user", "database", "replication")
GRANT_WATCH = 0.5  # seconds between looks: a revoked or expired grant ends its sessions within a second
SETTLE_SECONDS = 30.0  # how long a session outlives its client, to record what it had sent


class SessionEnd(Exception):
    """The session is over; the client has been told why."""


def prepare() -> list[socket.socket]:
    """In the parent, before workers start: the listening sockets and the certificate."""
    cfg = settings()
    tls.ensure_certificate()
    sockets = bind(cfg.bind, cfg.postgres_port)
    log.info("postgres relay listening on %s:%d", cfg.bind, sockets[0].getsockname()[1])
    return sockets


async def start(sockets: list[socket.socket], link: WorkerLink) -> PostgresRelay:
    return PostgresRelay(link=link).serve_on(sockets)


class PostgresRelay:
    """The listener in one worker: accepts, negotiates TLS, runs sessions, routes cancels."""

    def __init__(self, cfg: RelayConfig | None = None, link: WorkerLink | None = None):
        self.cfg = cfg or relay_config()
        self.link = link or WorkerLink()
        self.tls = tls.server_context()
        self.tls.set_alpn_protocols(["postgresql"])  # PostgreSQL 17 direct TLS asks for it
        self.sessions: dict[tuple[int, int], Session] = {}
        self._tasks: set[asyncio.Task] = set()
        self._sockets: list[socket.socket] = []

    def serve_on(self, sockets: list[socket.socket]) -> PostgresRelay:
        self._sockets = list(sockets)
        for sock in self._sockets:
            self._spawn(self._accept(sock))
        self.link.listen_for_cancels(asyncio.get_running_loop(), self._cancel_here)
        self._spawn(self._watch_grants())
        return self

    async def _watch_grants(self) -> None:
        """End sessions whose grant is gone (revoked, expired, account disabled). Their next
        statement would be refused anyway; an idle session must not linger on either."""
        while True:
            await asyncio.sleep(GRANT_WATCH)
            live: dict[str, set[str]] = {}
            for session in list(self.sessions.values()):
                principal = session.principal
                if principal is None:
                    continue
                if principal.service_account not in live:
                    try:
                        targets = await session.gate.connections_for(principal, "postgres")
                    except Exception:  # store unavailable: the gate refuses every statement meanwhile
                        continue
                    live[principal.service_account] = {t.name for t in targets}
                if session.dbname in live[principal.service_account]:
                    session.grant_seen = True
                elif session.grant_seen:
                    # Only a grant seen live is "gone": a session that logged in just after a grant
                    # was added may meet a snapshot older than it (its statements wait for it).
                    session.grant_gone()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self.link.accept_delay()
            if delay:
                await asyncio.sleep(delay)  # let a quieter worker take it
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and the like: back off, keep serving
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            self.link.session_opened(1)  # counted at once: connections often arrive together
            self._spawn(self._handle(conn, addr))

    async def _handle(self, sock: socket.socket, addr) -> None:
        try:
            await self._connection(sock, addr)
        finally:
            self.link.session_opened(-1)

    async def _connection(self, sock: socket.socket, addr) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.cfg.login_timeout):
                negotiated = await self._negotiate(loop, sock)
                if negotiated is None:
                    sock.close()
                    return
                initial, use_tls = negotiated
                wire = Wire(self.cfg.max_message, initial)
                await loop.connect_accepted_socket(lambda: wire, sock, ssl=self.tls if use_tls else None,
                                                   ssl_handshake_timeout=10 if use_tls else None)
        except (OSError, TimeoutError, ConnectionClosed, ProtocolError, struct.error) as exc:
            log.debug("connection from %s failed before login: %s", addr, exc)
            sock.close()
            return
        await Session(self, wire, addr, use_tls).run()

    async def _negotiate(self, loop, sock: socket.socket) -> tuple[bytes, bool] | None:
        """Answer SSLRequest/GSSENCRequest on the raw socket; None when nothing more to do."""
        while True:
            first = await _peek(loop, sock)
            if first is None:
                return None
            if first == 0x16:  # a TLS ClientHello: direct TLS, no SSLRequest
                return b"", True
            head = await _recv_exactly(loop, sock, 8)
            length, code = struct.unpack("!ii", head)
            if length == 8 and code == pgwire.SSL_REQUEST:
                await loop.sock_sendall(sock, b"S")
                return b"", True
            if length == 8 and code == pgwire.GSSENC_REQUEST:
                await loop.sock_sendall(sock, b"N")
                continue
            if length == 16 and code == pgwire.CANCEL_REQUEST:
                self.cancel(*struct.unpack("!ii", await _recv_exactly(loop, sock, 8)))
                return None
            return head, False

    def cancel(self, pid: int, secret: int) -> None:
        if not self._cancel_here(pid, secret):
            self.link.forward_cancel(pid, secret)  # another worker's session, maybe

    def _cancel_here(self, pid: int, secret: int) -> bool:
        """Cancel this worker's session with that key; never passed on (no loops)."""
        session = self.sessions.get((pid, secret))
        if session is not None:
            session.cancel()
        return session is not None

    def shutdown_sessions(self) -> None:
        for session in list(self.sessions.values()):
            session.shutdown()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


async def _peek(loop, sock: socket.socket) -> int | None:
    fut = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())
    data = sock.recv(1, socket.MSG_PEEK)
    return data[0] if data else None


async def _recv_exactly(loop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise ConnectionClosed()
        data += chunk
    return data


class Session:
    def __init__(self, relay: PostgresRelay, client: Wire, addr, use_tls: bool):
        self.relay = relay
        self.cfg = relay.cfg
        self.client = client
        self.client_addr = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        self.tls = use_tls
        self.gate = get_gate()
        self.key: tuple[int, int] = (0, 0)  # BackendKeyData: the target's pid, our secret
        self.principal = None
        self.rec = None
        self.link: pgauth.TargetLink | None = None
        self.conv: Conversation | None = None
        self.dbname = self.user = ""
        self.run_id: str | None = None
        self.reason = ""  # the agent's justification, shown to reviewers (app.relay.pgreason)
        self._token = ""
        self.token_checked = 0.0
        self.token_version: int | None = None  # the store version the token was last checked under
        self._ending = False
        self.grant_seen = False

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
        version = pgwire.unpack_i32(body, 0)[0]
        if version == pgwire.CANCEL_REQUEST and len(body) == 12:  # a cancel sent over TLS
            self.relay.cancel(*struct.unpack_from("!ii", body, 4))
            return False
        if version >> 16 != 3:
            return self.fatal("0A000", "airlock: unsupported frontend protocol (or a TLS request inside TLS)")
        params = pgwire.parse_startup_params(body)
        unsupported = [k for k in params if k.startswith("_pq_.")]
        if version & 0xFFFF or unsupported:
            self.client.write(pgwire.negotiate_protocol_version(0, unsupported))
        self.user = params.get("user", "")
        self.dbname = params.get("database") or self.user
        if not self.tls and not self.cfg.allow_plaintext:
            return self.fatal("28000", "airlock: TLS is required; connect with sslmode=require",
                              hint="the token is a password: it is never accepted over an unencrypted connection")
        if params.get("replication", "false").lower() not in ("false", "0", "no", "off"):
            return self.fatal("0A000", "airlock: replication connections are not relayed")
        self.client.write(pgwire.auth_request(3))
        kind, body, _ = await self.client.read_frame()
        if kind != 0x70:  # p
            raise ProtocolError("expected a password message")
        self._token, _ = pgwire.cstring(body, 0)
        try:
            self.principal = await self.gate.authenticate(self._token, claimed=self.user, protocol="postgres",
                                                          client=str(self.client_addr))
        except AuthError as exc:
            log.info("postgres login refused for %r from %s: %s", self.user, self.client_addr, exc.reason)
            return self.fatal("28P01", f'password authentication failed for user "{self.user}"', detail=exc.reason)
        except Unavailable as exc:
            return self.fatal("57P03", str(exc))
        self.token_checked, self.token_version = time.monotonic(), self.gate.version
        target = await self.gate.target(self.dbname)
        if target is None or target.type != "postgres":
            return self.fatal("3D000", f'airlock: connection "{self.dbname}" does not exist')
        # From here on the grant watcher ends this session when its grant goes.
        granted = await self.gate.connections_for(self.principal, "postgres")
        self.grant_seen = any(t.name == self.dbname for t in granted)
        app_name, self.reason = split_app_name(params.get("application_name", ""))
        self.run_id = app_name if app_name and app_name not in _TOOL_NAMES else None
        self.rec = recorder().open(protocol="postgres", connection=self.dbname,
                                   service_account=self.principal.service_account, client_addr=self.client_addr,
                                   run_id=self.run_id, meta={"tls": self.tls, "user": self.user})
        forwarded = {k: v for k, v in params.items() if k not in _NOT_FORWARDED and not k.startswith("_pq_.")}
        refused = startup_divergence(forwarded) or await Checker(self, self.client.write,
                                                                 lambda: None).check_settings(forwarded)
        if refused is not None:
            return self.fatal("42501", f"airlock: {refused}")
        cfg = target.config
        password = target.secrets.get("password")
        try:
            self.link = await pgauth.connect(
                cfg["address"], database=cfg.get("database") or self.dbname, username=cfg["username"],
                password=password.reveal() if password is not None else None, params=forwarded,
                tls_mode=self.cfg.target_tls, max_frame=self.cfg.max_message)
        except pgauth.TargetError as exc:
            return self.fatal(exc.sqlstate, f"airlock: {exc.message}")
        self.conv = Conversation(self, self.cfg)
        self.key = self.relay.link.new_key(self.link.pid)
        while self.key in self.relay.sessions:  # two targets may reuse a pid; keys stay unique here
            self.key = self.relay.link.new_key(self.link.pid)
        out = [pgwire.auth_request(0), *self.link.parameters, pgwire.backend_key_data(*self.key),
               pgwire.ready_for_query(self.link.status)]
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

    async def check_token(self) -> None:
        """Authenticate the session's token again (the checker says when: pgchecks)."""
        expires = self.principal.expires_at if self.principal is not None else None
        if expires is not None and time.time() >= expires:
            # From the claims verified at login: needs neither the IdP nor the store.
            self.fatal("28P01", "airlock: the session's token has expired", detail="token expired")
            raise SessionEnd()
        self.token_checked = time.monotonic()
        try:
            await self.gate.authenticate(self._token, claimed=self.user)
            self.token_version = self.gate.version
        except AuthError as exc:
            self.fatal("28P01", "airlock: the session's token is no longer valid", detail=exc.reason)
            raise SessionEnd() from None
        except Unavailable:
            # The store or IdP is down: the gate refuses every statement while the store
            # is, and the token's expiry is enforced above without either.
            pass

    def record(self, kind: str, data: dict) -> None:
        if self.rec is not None:
            self.rec.event(kind, _json(data))

    def record_answer(self, sql: str, rule: str | None, masks: list[str], ms: float, answer: bytes,
                      sample_rows: int, masked: int = 0) -> None:
        """A simple query's output event, built from its raw answer by the writer;
        `masked`: how many values masking replaced in it."""
        if self.rec is not None:
            if masked:
                self.rec.event_later("output", answer_json, sql, rule, masks, ms, answer, sample_rows, masked)
            else:
                self.rec.event_later("output", answer_json, sql, rule, masks, ms, answer, sample_rows)

    def tag_run(self, app_name: str) -> None:
        run_id, reason = split_app_name(app_name)
        if reason:
            self.reason = reason
        if run_id and run_id != self.run_id:
            self.run_id = run_id
            if self.rec is not None:
                self.rec.tag_run(run_id)

    def cancel(self) -> None:
        if self.conv is not None and self.conv.cancel():
            return
        link = self.link
        if link is not None:
            asyncio.get_running_loop().create_task(pgauth.send_cancel(link.host, link.port, link.pid, link.secret))

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
        self.fatal("42501", f'airlock: the grant of "{self.principal.service_account}" on "{self.dbname}" was '
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
            self.link.wire.write(pgwire.frame(b"X"))
        self._close_wires()
        if self.rec is not None:
            conv = self.conv
            self.rec.close(statements=conv.statements if conv else 0, refused=conv.refused if conv else 0)
