"""Logging in to the target: TLS if it offers it, then SCRAM-SHA-256, MD5 or cleartext.

The relay is an ordinary client here. The password comes from the vault and is
revealed only to compute the answer the server asks for; it is never logged.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
from collections import OrderedDict
from dataclasses import dataclass, field

from . import protocol
from .protocol import unpack_i32
from .wire import ConnectionClosed, Wire

CONNECT_TIMEOUT = 10.0
_SALTED: OrderedDict[tuple[bytes, bytes, int], bytes] = OrderedDict()  # PBKDF2 results, see _salted


class TargetError(Exception):
    """The target could not be reached or refused us; `message` is safe to show the client."""

    def __init__(self, message: str, sqlstate: str = "08006"):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


@dataclass
class TargetLink:
    wire: Wire
    host: str
    port: int
    pid: int = 0
    secret: int = 0
    status: bytes = b"I"
    parameters: list[bytes] = field(default_factory=list)  # raw ParameterStatus frames
    tls: bool = False


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, 5432
    return host.strip("[]"), int(port)


async def connect(address: str, *, database: str, username: str, password: str | None,
                  params: dict[str, str], tls_mode: str, max_frame: int) -> TargetLink:
    host, port = split_address(address)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, wire = await loop.create_connection(lambda: Wire(max_frame), host, port)
            link = TargetLink(wire, host, port)
            try:
                await _negotiate_tls(loop, link, tls_mode)
                startup = {"user": username, "database": database or username, **params}
                wire.write(protocol.startup_message(startup))
                await _authenticate(wire, username, password)
                await _until_ready(link)
            except BaseException:
                wire.close()
                raise
    except TimeoutError:
        raise TargetError(f"the target {address} did not answer in time") from None
    except OSError as exc:
        raise TargetError(f"cannot reach the target {address}: {exc.strerror or exc}") from None
    except ConnectionClosed:
        raise TargetError(f"the target {address} closed the connection during login") from None
    return link


async def _negotiate_tls(loop, link: TargetLink, mode: str) -> None:
    if mode == "disable":
        return
    wire = link.wire
    wire.write(protocol._I32.pack(8) + protocol._I32.pack(protocol.SSL_REQUEST))
    answer = await wire.read_byte()
    if answer == b"S":
        if wire.buffered:  # bytes before the handshake could be injected by a man in the middle
            raise TargetError("the target sent unexpected data before TLS")
        ctx = ssl.create_default_context(cafile=os.environ.get("AIRLOCK_RELAY_TARGET_CA") or None)
        if mode != "verify-full":
            # prefer/require protect against eavesdropping only, as libpq's modes do.
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            wire.transport = await loop.start_tls(wire.transport, wire, ctx, server_hostname=link.host)
        except ssl.SSLError as exc:
            raise TargetError(f"TLS with the target failed: {exc.reason or exc}") from None
        link.tls = True
    elif answer == b"N":
        if mode in ("require", "verify-full"):
            raise TargetError("the target does not support TLS, which this relay requires")
    else:
        raise TargetError("the target answered the TLS request with garbage")


async def _authenticate(wire: Wire, username: str, password: str | None) -> None:
    scram: _Scram | None = None
    while True:
        kind, body, _ = await wire.read_frame()
        if kind == 0x45:  # E
            f = protocol.parse_fields(body)
            raise TargetError(f"the target refused the login: {f.get('M', 'unknown error')}", f.get("C", "08006"))
        if kind == 0x76:  # v: NegotiateProtocolVersion, nothing to do for 3.0
            continue
        if kind != 0x52:  # R
            raise TargetError("the target sent an unexpected message during login")
        code = unpack_i32(body, 0)[0]
        if code == 0:
            return
        if code in (3, 5, 10) and password is None:
            raise TargetError("the target asks for a password, but the connection has none in the vault", "28P01")
        if code == 3:
            wire.write(protocol.frame(b"p", password.encode() + b"\0"))
        elif code == 5:
            salt = bytes(body[4:8])
            inner = hashlib.md5(password.encode() + username.encode()).hexdigest().encode()
            wire.write(protocol.frame(b"p", b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0"))
        elif code == 10:
            mechanisms = bytes(body[4:]).split(b"\0")
            if b"SCRAM-SHA-256" not in mechanisms:
                raise TargetError("the target offers no SASL mechanism the relay supports", "28000")
            scram = _Scram(password)
            first = scram.client_first()
            wire.write(protocol.frame(b"p", b"SCRAM-SHA-256\0" + protocol._I32.pack(len(first)) + first))
        elif code == 11 and scram is not None:
            final = await scram.client_final(bytes(body[4:]))
            wire.write(protocol.frame(b"p", final))
        elif code == 12 and scram is not None:
            scram.verify_server(bytes(body[4:]))
        else:
            raise TargetError(f"the target asks for an authentication method the relay does not support ({code})",
                              "28000")


async def _until_ready(link: TargetLink) -> None:
    while True:
        kind, body, raw = await link.wire.read_frame()
        if kind == 0x5A:  # Z
            link.status = bytes(body[:1])
            return
        if kind == 0x53:  # S
            link.parameters.append(bytes(raw))
        elif kind == 0x4B:  # K
            link.pid, link.secret = unpack_i32(body, 0)[0], unpack_i32(body, 4)[0]
        elif kind == 0x45:
            f = protocol.parse_fields(body)
            raise TargetError(f"the target refused the session: {f.get('M', 'unknown error')}", f.get("C", "08006"))
        elif kind != 0x4E:  # N: notices during login are dropped
            raise TargetError("the target sent an unexpected message after login")


async def send_cancel(host: str, port: int, pid: int, secret: int) -> None:
    """Forward a cancel to the target with its own backend key (a fresh connection, as libpq does)."""
    try:
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(host, port)
            writer.write(protocol._I32.pack(16) + protocol._I32.pack(protocol.CANCEL_REQUEST)
                         + protocol._I32.pack(pid) + protocol._I32.pack(secret))
            await writer.drain()
            writer.close()
    except (OSError, TimeoutError):
        pass  # a cancel is best effort in PostgreSQL too


class _Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802, 7677) without channel binding."""

    def __init__(self, password: str):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        # PostgreSQL takes the user from the StartupMessage and ignores n= here.
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    async def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), int(attrs.get("i", "0"))
        if not nonce.startswith(self.nonce) or not salt or not 0 < iterations <= 1_000_000:
            raise TargetError("the target's SCRAM challenge is invalid", "28000")
        salted = await _salted(self.password, base64.b64decode(salt), iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server(self, server_final: bytes) -> None:
        text = server_final.decode(errors="replace")
        if not text.startswith("v=") or not hmac.compare_digest(
                base64.b64decode(text[2:].split(",")[0]), self.server_signature):
            raise TargetError("the target failed SCRAM server verification", "28000")


async def _salted(password: bytes, salt: bytes, iterations: int) -> bytes:
    # PBKDF2 takes milliseconds; the salt is fixed per role, so reconnects reuse it.
    key = (hashlib.sha256(password).digest(), salt, iterations)
    hit = _SALTED.get(key)
    if hit is None:
        hit = await asyncio.to_thread(hashlib.pbkdf2_hmac, "sha256", password, salt, iterations)
        _SALTED[key] = hit
        if len(_SALTED) > 256:
            _SALTED.popitem(last=False)
    return hit
