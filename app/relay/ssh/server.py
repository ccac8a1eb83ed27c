"""The SSH relay: an SSH server to runtimes (asyncssh), an SSH client to targets.

    ssh -p 2222 CONNECTION@relay   (the token as the password, or a registered key)

The user name names the connection. Each client connection authenticates once, opens
one recording and, on its first channel, one connection to the target with the vault's
credential. Channels are exec requests, shells and the sftp subsystem (session.py,
sftp.py). Forwarding, agent forwarding and X11 are refused. A garbage or truncated
handshake ends that connection only: asyncssh runs each in its own task.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time

import asyncssh
from asyncssh.stream import SSHReader, SSHWriter

from app.config import settings
from app.gate import Gate, Unavailable, get_gate
from app.identity import AuthError
from app.recording import SessionRecording, recorder
from app.types import Operation, Principal

from ..listen import listen
from ..session import GrantWatcher, TokenCheck
from ..workers import WorkerLink
from .hostkey import ensure_host_key, load_host_key
from .session import handle_process
from .target import CIPHERS, TargetError, connect

log = logging.getLogger(__name__)

LOGIN_TIMEOUT = 30.0


def prepare() -> list[socket.socket]:
    cfg = settings()
    ensure_host_key()
    sockets = listen(cfg.bind, cfg.ssh_port, "SSH", "AIRLOCK_SSH_PORT")
    log.info("ssh relay listening on %s:%d", cfg.bind, sockets[0].getsockname()[1])
    return sockets


async def start(sockets: list[socket.socket], link: WorkerLink) -> SSHRelay:
    relay = SSHRelay()
    await relay.serve_on(sockets)
    return relay


class SSHRelay:
    """The listener in one worker."""

    def __init__(self) -> None:
        self.acceptors: list[asyncssh.SSHAcceptor] = []
        self.connections: set[Connection] = set()
        self._grants: asyncio.Task | None = None

    async def serve_on(self, sockets: list[socket.socket]) -> None:
        key = load_host_key()
        for sock in sockets:
            # No process_factory: sessions come from Connection.session_requested, so the
            # sftp subsystem reaches the relay (asyncssh would serve the local disk instead).
            self.acceptors.append(await asyncssh.listen(
                sock=sock, server_factory=lambda: Connection(self), server_host_keys=[key],
                encryption_algs=CIPHERS, encoding=None, line_editor=False, x11_forwarding=False, agent_forwarding=False,
                login_timeout=LOGIN_TIMEOUT, kbdint_auth=False, gss_auth=False, host_based_auth=False,
                config=None, keepalive_interval=30,
            ))
        self._grants = asyncio.get_running_loop().create_task(GrantWatcher("ssh", lambda: self.connections).run())

    def shutdown_sessions(self) -> None:
        for conn in list(self.connections):
            conn.close("the relay is stopping")

    def close(self) -> None:
        for acceptor in self.acceptors:
            acceptor.close()
        if self._grants is not None:
            self._grants.cancel()

    async def wait_closed(self) -> None:
        for acceptor in self.acceptors:
            await acceptor.wait_closed()


class Connection(asyncssh.SSHServer):
    """One runtime connection: who it is, which connection it names, its recording and
    its (lazily opened) target connection, shared by its channels."""

    def __init__(self, relay: SSHRelay) -> None:
        self.relay = relay
        self.gate: Gate = get_gate()
        self.conn: asyncssh.SSHServerConnection | None = None
        self.connection_name = ""
        self.principal: Principal | None = None
        self.token: TokenCheck | None = None  # None after a key login: the key is checked by asyncssh
        self.grant_seen = False  # the grant watcher closes the connection once a grant seen live is gone
        self.recording: SessionRecording | None = None
        self.peer = ""
        self._target: asyncssh.SSHClientConnection | None = None
        self._target_lock = asyncio.Lock()

    # -- lifecycle --------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.relay.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.connections.discard(self)
        if self._target is not None:
            self._target.close()
        if self.recording is not None:
            self.recording.close(reason=str(exc) if exc else "closed")

    def close(self, reason: str) -> None:
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    # -- authentication ---------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        self.connection_name = username
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        try:
            principal = await self.gate.authenticate(password)
        except (AuthError, Unavailable) as exc:
            log.info("ssh login refused for %s from %s: %s", username, self.peer, exc)
            return False
        return self._logged_in(principal, TokenCheck(self.gate, password, None, principal))

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # asyncssh checks the client's signature after this says the key is acceptable.
        try:
            principal = await self.gate.authenticate_key(key.export_public_key().decode())
        except (AuthError, Unavailable) as exc:
            log.info("ssh key login refused for %s from %s: %s", username, self.peer, exc)
            return False
        return self._logged_in(principal)

    async def credential_refusal(self) -> str | None:
        """Why the credential it logged in with no longer counts, or None while it does:
        a token is authenticated again when due (the core's TokenCheck), every credential
        ends at its expiry."""
        if self.principal is None:
            return "not logged in"
        if self.token is not None:
            return await self.token.refusal() if self.token.due() or self.token.expired() else None
        expires = self.principal.expires_at
        return "expired" if expires is not None and time.time() >= expires else None

    def grant_gone(self) -> None:
        self.close(f"the grant of {self.principal.service_account} on {self.connection_name} was revoked "
                   "or has expired")

    def _logged_in(self, principal: Principal, token: TokenCheck | None = None) -> bool:
        # A key is validated when the client only asks whether it would do, and again
        # right before its signature is checked: the last one validated is the one that
        # logs in. The session is recorded once authentication has completed.
        self.principal, self.token = principal, token
        return True

    def auth_completed(self) -> None:
        if self.recording is None and self.principal is not None:
            self.recording = recorder().open(protocol="ssh", connection=self.connection_name,
                                             service_account=self.principal.service_account, client_addr=self.peer)

    def session_requested(self) -> RelayProcess:
        return RelayProcess(functools.partial(handle_process, self), None, 3, False)

    # -- forwarding: refused unless a rule allows it ----------------------------------

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int):
        """Local forwarding (-L, -W, -D): the channel is decided and relayed by `_forward`."""
        if self.principal is None:
            return False

        async def handler(reader: asyncssh.SSHReader, writer: asyncssh.SSHWriter) -> None:
            await self._forward(reader, writer, dest_host, dest_port)

        return handler

    async def _forward(self, reader, writer, host: str, port: int) -> None:
        what = f"forward to {host}:{port}"
        op = Operation("ssh", self.connection_name, "admin", text=what, command=what, targets=(f"{host}:{port}",),
                       attributes=frozenset({"port_forwarding"}))
        verdict = await self.gate.decide(self.principal, op, recording=self.recording, needs_rule=True)
        if not verdict.allowed:
            writer.close()
            return
        try:
            target = await self.target()
            t_reader, t_writer = await target.open_connection(host, port)
        except (TargetError, asyncssh.Error, OSError) as exc:
            self._notice("port forwarding failed", f"{host}:{port}: {type(exc).__name__}")
            writer.close()
            return

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.write_eof()

        await asyncio.gather(pipe(reader, t_writer), pipe(t_reader, writer), return_exceptions=True)
        writer.close()
        t_writer.close()

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self._notice("remote port forwarding refused", f"{listen_host}:{listen_port}")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._notice("unix socket forwarding refused", dest_path)
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        self._notice("unix socket forwarding refused", listen_path)
        return False

    def _notice(self, what: str, detail: str) -> None:
        if self.recording is not None:
            self.recording.event("notice", {"text": what, "detail": detail})

    # -- the target -------------------------------------------------------------------

    async def target(self) -> asyncssh.SSHClientConnection:
        """The target connection, opened on first use. TargetError says why not."""
        async with self._target_lock:
            if self._target is None:
                target = await self.gate.target(self.connection_name)
                if target is None or target.type != "ssh":
                    raise TargetError(f"there is no ssh connection named {self.connection_name!r}")
                self._target = await connect(target)
            return self._target


class RelayProcess(asyncssh.SSHServerProcess):
    """A session whose sftp subsystem goes to our handler (sftp.py), like exec and shell."""

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        if self._chan.get_subsystem() != "sftp":
            super().session_started()
            return
        stdin = SSHReader(self, self._chan)
        stdout = SSHWriter(self, self._chan)
        stderr = SSHWriter(self, self._chan, asyncssh.EXTENDED_DATA_STDERR)
        self._conn.create_task(self._start_process(stdin, stdout, stderr), stdin.logger)
