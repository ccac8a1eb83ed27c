"""The MySQL relay's listener and sessions.

    runtime --TLS, token as clear-text password--> relay --vault credential--> target

A connection goes: mysql-mimic's handshake (front.py) -> the token through the gate ->
the connection named by the default database -> login to the target (target.py) -> the
session reads the server's sql_mode and client character set -> `Commands` relays
commands one at a time. Anything unexpected ends this one connection; the listener and
every other session carry on.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl

from mysql_mimic import packets
from mysql_mimic.charset import CharacterSet
from mysql_mimic.connection import Connection
from mysql_mimic.control import LocalControl
from mysql_mimic.session import Session as MimicSession
from mysql_mimic.stream import MysqlStream
from mysql_mimic.types import Capabilities, ServerStatus

from app.config import settings
from app.gate import Unavailable, get_gate
from app.identity import AuthError
from app.recording import recorder
from app.sql.mysql import SAFE_CHARSETS
from app.sql.mysql_lexer import Mode

from .. import tls
from ..config import RelayConfig
from ..listen import listen
from ..listener import Listener
from ..session import TokenCheck
from ..workers import WorkerLink
from . import reader as counted
from . import target as target_side
from . import wire
from .commands import Commands

REVOKED_GRACE = 1.0  # a statement the gate is deciding when the grant goes has this long to be refused
from .front import CAPABILITIES, Identities, LoginRefused, TokenAuth, check_response

log = logging.getLogger(__name__)
RUN_ATTRIBUTE = "airlock_run"  # a connection attribute naming the agent's run
SERVER_VERSION = "8.0.36-airlock"
_ids = itertools.count(1)


def prepare() -> list[socket.socket]:
    cfg = settings()
    tls.ensure_certificate()
    sockets = listen(cfg.bind, cfg.mysql_port, "MySQL", "AIRLOCK_MYSQL_PORT")
    log.info("mysql relay listening on %s:%d", cfg.bind, sockets[0].getsockname()[1])
    return sockets


async def start(sockets: list[socket.socket], link: WorkerLink) -> MysqlRelay:
    return MysqlRelay(link=link).serve_on(sockets)


class MysqlRelay(Listener):
    """The listener in one worker (the accept loop, task set and grant watcher are the core's)."""

    protocol = "mysql"

    def __init__(self, cfg: RelayConfig | None = None, link: WorkerLink | None = None):
        super().__init__(cfg, link)
        self.tls = tls.server_context()
        self.control = LocalControl()

    async def connection(self, sock: socket.socket, addr) -> None:
        session = Session(self, sock, addr)
        self.sessions[id(session)] = session
        try:
            await session.run()
        except Exception:  # noqa: BLE001 - one broken connection must not reach the listener
            log.exception("mysql session from %s failed", session.client_addr)
        finally:
            self.sessions.pop(id(session), None)
            session.end()

    def shutdown_sessions(self) -> None:
        for session in list(self.sessions.values()):
            session.refuse(1053, "airlock: the relay is shutting down", "08S01")
            session.end()


class Session:
    def __init__(self, relay: MysqlRelay, sock: socket.socket, addr):
        self.relay, self.cfg = relay, relay.cfg
        self.sock = sock
        self.reader: counted.Reader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.client_addr = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        self.gate = get_gate()
        self.principal = None
        self.user = self.dbname = ""
        self.token: TokenCheck | None = None
        self.grant_seen = False  # the grant watcher ends the session once a grant seen live is gone
        self.link: target_side.TargetLink | None = None
        self.target_db = ""
        self.rec = None
        self.run_id: str | None = None
        self.mode = Mode()
        self.charset = "utf8mb4"
        self.multi = False
        self.tls = False
        self.conn: Connection | None = None
        self.gone: asyncio.Future | None = None
        self._ended = False
        self.summary: dict = {}
        self.deciding = 0  # statements waiting for the gate (held ones included)
        self.grant_lost: str | None = None  # the goodbye, once the grant is gone

    # -- login ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.cfg.login_timeout):
                await self._connection_phase()
        except LoginRefused as exc:
            await self._say(wire.error(exc.code, exc.message, exc.sqlstate))
            return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError) as exc:
            log.debug("mysql connection from %s failed before login: %r", self.client_addr, exc)
            return
        except Exception as exc:  # noqa: BLE001 - garbage from the client: this connection ends
            log.info("mysql handshake from %s failed: %s", self.client_addr, type(exc).__name__)
            await self._say(wire.error(1043, "airlock: bad handshake", "08S01"))
            return
        if self.link is None:  # refused (1045 already sent)
            return
        self.multi = bool(self.conn.capabilities & Capabilities.CLIENT_MULTI_STATEMENTS)
        self.gone = asyncio.get_running_loop().create_future()
        watch = asyncio.ensure_future(self.writer.wait_closed())
        watch.add_done_callback(lambda _: self.gone.done() or self.gone.set_result("the client disconnected"))
        try:
            await Commands(self).run()
        finally:
            watch.cancel()

    async def _connection_phase(self) -> None:
        """mysql-mimic's connection phase, with the TLS upgrade done on the socket: the
        client sends its ClientHello right after the SSLRequest, and a stream reader
        would already have swallowed it."""
        loop = asyncio.get_running_loop()
        plugin = TokenAuth(self._login)
        auth_data, auth_state = await plugin.start()
        caps = CAPABILITIES | Capabilities.CLIENT_SSL
        hello = packets.make_handshake_v10(capabilities=caps, server_charset=CharacterSet.utf8mb4,
                                           server_version=SERVER_VERSION, connection_id=next(_ids),
                                           auth_data=auth_data, status_flags=ServerStatus.SERVER_STATUS_AUTOCOMMIT,
                                           auth_plugin_name=plugin.name)
        await loop.sock_sendall(self.sock, wire.frame(hello, 0)[0])
        head = await _recv_exactly(loop, self.sock, 4)
        body = await _recv_exactly(loop, self.sock, head[0] | head[1] << 8 | head[2] << 16)
        check_response(body, int(caps))
        response = packets.parse_handshake_response(capabilities=caps, data=body)
        seq = 2
        if isinstance(response, packets.SSLRequest):
            await self._streams(loop, self.relay.tls)
            self.tls = True
        else:
            await self._streams(loop, None)
        stream = MysqlStream(self.reader, self.writer)
        stream.seq.value = seq
        if self.tls:
            body = await stream.read()
            check_response(body, int(caps))
            response = packets.parse_handshake_response_41(capabilities=caps, data=body)
        identities = Identities(plugin)
        self.conn = conn = Connection(stream=stream, session=MimicSession(), control=self.relay.control,
                                      identity_provider=identities, server_capabilities=caps)
        conn.handshake_auth_data, conn.handshake_auth_plugin = auth_data, plugin.name
        conn.capabilities = response.capabilities & ~Capabilities.CLIENT_SSL
        conn.max_packet_size = response.max_packet_size
        conn.session.variables.set("character_set_client", response.client_charset.name)
        conn.session.database = response.database
        conn.client_plugin_name = response.client_plugin
        conn.client_connect_attrs = response.connect_attrs
        await conn.authenticate(auth_state=auth_state, server_plugin=plugin, username=response.username,
                                client_plugin_name=response.client_plugin, auth_response=response.auth_response,
                                connect_attrs=response.connect_attrs)

    async def _streams(self, loop, context) -> None:
        # Counted from the first byte: the fast lane must know what the Python path has
        # not read yet (reader.py), and a command may arrive while the login still runs.
        self.reader, protocol, counting = counted.stream_pair(1 << 20)
        transport, _ = await loop.connect_accepted_socket(lambda: counting, self.sock, ssl=context,
                                                          ssl_handshake_timeout=10 if context else None)
        self.writer = asyncio.StreamWriter(transport, protocol, self.reader.stream, loop)

    async def _say(self, payload: bytes) -> None:
        if self.writer is None:
            return
        try:
            stream = self.conn.stream if self.conn is not None else None
            if stream is not None:
                await stream.write(payload)
            else:
                self.writer.write(wire.frame(payload, 2)[0])
                await self.writer.drain()
        except Exception:  # noqa: BLE001 - the client is gone anyway
            pass

    async def _login(self, username: str, token: str) -> None:
        conn = self.conn
        if not self.tls and not self.cfg.allow_plaintext:
            raise LoginRefused(1045, "airlock: TLS is required (the token is a password); connect with --ssl")
        self.user, self.dbname = username, conn.session.database or ""
        try:
            self.principal = await self.gate.authenticate(token, claimed=username)
        except AuthError as exc:
            log.info("mysql login refused for %r from %s: %s", username, self.client_addr, exc.reason)
            raise LoginRefused(1045, f"Access denied for user '{username}' (airlock: {exc.reason})") from None
        except Unavailable as exc:
            raise LoginRefused(1045, f"airlock: {exc}") from None
        self.token = TokenCheck(self.gate, token, username, self.principal)
        charset = conn.client_charset.name
        if charset not in SAFE_CHARSETS:
            raise LoginRefused(1115, f"airlock: the character set {charset} is refused: a byte below 0x80 can be "
                                     "part of one of its characters", "42000")
        if not self.dbname:
            raise LoginRefused(1046, "airlock: name the connection as the database (mysql ... CONNECTION)", "3D000")
        target = await self.gate.target(self.dbname)
        if target is None or target.type != "mysql":
            raise LoginRefused(1049, f"airlock: connection '{self.dbname}' does not exist", "42000")
        granted = await self.gate.connections_for(self.principal, "mysql")
        if not any(t.name == self.dbname for t in granted):
            raise LoginRefused(1044, f"airlock: '{self.principal.service_account}' has no grant on "
                                     f"'{self.dbname}'", "42000")
        self.grant_seen = True
        attrs = conn.client_connect_attrs or {}
        self.run_id = (attrs.get(RUN_ATTRIBUTE) or None)
        cfg = target.config
        self.target_db = cfg.get("database") or self.dbname
        password = target.secrets.get("password")
        try:
            self.link = await target_side.connect(
                cfg["address"], database=self.target_db, username=cfg["username"],
                password=password.reveal() if password is not None else None,
                charset="utf8" if charset == "utf8mb3" else charset, client_flags=int(conn.capabilities),
                tls_mode=self.cfg.target_tls)
        except target_side.TargetError as exc:
            raise LoginRefused(exc.code if exc.code != 1045 else 2003, f"airlock: {exc.message}", "08004") from None
        self.rec = recorder().open(protocol="mysql", connection=self.dbname,
                                   service_account=self.principal.service_account, client_addr=self.client_addr,
                                   run_id=self.run_id, meta={"tls": True, "user": username,
                                                             "program": attrs.get("program_name", "")})
        await self.read_server_state()

    async def read_server_state(self) -> None:
        """The session's sql_mode and client character set, as the server reports them:
        the lexer follows the first, and the second must stay ASCII-safe."""
        (mode, charset), = await self.link.query("SELECT @@session.sql_mode, @@session.character_set_client",
                                                 self.cfg.max_message)
        self.mode = Mode.of((mode or b"").decode())
        name = self.charset = (charset or b"").decode()
        if name not in SAFE_CHARSETS:
            raise LoginRefused(1115, f"airlock: the session's character set {name} is refused", "42000")

    async def check_token(self) -> bool:
        """Authenticate the token again when due (the core's TokenCheck: the store's version
        moved, or a second passed). False: the session must end."""
        try:
            await self.gate.current_stamp()  # reads the store's version when it is due
        except Exception:  # noqa: BLE001 - store down: the gate refuses the statement itself
            return True
        return not self.token.due() or await self.token.refusal() is None

    @property
    def connection_name(self) -> str:
        return self.dbname

    def grant_gone(self) -> None:
        if self.link is None or self.grant_lost is not None:
            return  # still logging in (the watcher looks again once it has), or already said
        self.grant_lost = (f"airlock: the grant of '{self.principal.service_account}' on '{self.dbname}' "
                           "was revoked or has expired; the session is closed")
        if self.deciding:
            # A statement waits for the gate (held, say). The gate refuses it for the same
            # reason at its next look, and that refusal answers the client's command in
            # order; Commands ends the session after it. An unsolicited error now would
            # break the command's packet sequence, and the client would only see 2013.
            asyncio.get_running_loop().call_later(REVOKED_GRACE, self._say_goodbye)
            return
        self._say_goodbye()

    def _say_goodbye(self) -> None:
        if not self._ended:
            self.refuse(1142, self.grant_lost or "airlock: the session is closed", "42000", seq=0)
            self.end()

    def token_fresh(self) -> bool:
        """Whether check_token() would pass without reading the store: the token was
        checked within the second under the gate's current version, no version read is
        due and it has not expired (the core's TokenCheck). The fast lane (lane.py) runs
        only then; otherwise the Python path checks."""
        return not self.token.due() and not self.token.expired()

    # -- the end ----------------------------------------------------------------------

    def tag_run(self, run_id: str) -> None:
        if run_id and run_id != self.run_id:
            self.run_id = run_id
            if self.rec is not None:
                self.rec.tag_run(run_id)

    def refuse(self, code: int, message: str, sqlstate: str = "HY000", seq: int = 1) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(wire.frame(wire.error(code, message, sqlstate), seq)[0])

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self.link is not None:
            self.link.close()
        if self.writer is not None:
            self.writer.close()
        else:
            self.sock.close()
        if self.rec is not None:
            self.rec.close(**self.summary)


async def _recv_exactly(loop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise ConnectionResetError("the client left during the handshake")
        data += chunk
    return data
