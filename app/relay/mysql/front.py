"""The front side: runtimes log in to a MySQL server (mysql-mimic's handshake), over TLS,
with the airlock token as a clear-text password.

mysql-mimic runs the connection phase only: the handshake, the TLS upgrade and the auth
plugin exchange. `TokenAuth` validates the token through the gate and, in the same step,
routes the default database (the CONNECTION) and logs in to the target, so that every
failure is the login's error, before the client is told it is in. After that the
session (session.py) speaks packets itself: mysql-mimic's own command phase would
answer queries from its own engine, not from the target.
"""
from __future__ import annotations

import logging
import struct
from typing import Optional

from mysql_mimic.auth import FILLER, AuthInfo, AuthPlugin, AuthState, Forbidden, IdentityProvider, Success, User
from mysql_mimic.types import Capabilities

from . import wire

log = logging.getLogger(__name__)

# The capabilities the relay offers (the client's answer is intersected with them).
# Not offered: DEPRECATE_EOF (one result-set format on both legs), QUERY_ATTRIBUTES and
# SESSION_TRACK (the relay reads OK packets), LOCAL_FILES, COMPRESS, IGNORE_SPACE (it
# changes how the server lexes).
CAPABILITIES = (
    Capabilities.CLIENT_PROTOCOL_41 | Capabilities.CLIENT_CONNECT_WITH_DB | Capabilities.CLIENT_CONNECT_ATTRS
    | Capabilities.CLIENT_PLUGIN_AUTH | Capabilities.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capabilities.CLIENT_SECURE_CONNECTION | Capabilities.CLIENT_LONG_PASSWORD | Capabilities.CLIENT_LONG_FLAG
    | Capabilities.CLIENT_TRANSACTIONS | Capabilities.CLIENT_MULTI_STATEMENTS | Capabilities.CLIENT_MULTI_RESULTS
    | Capabilities.CLIENT_PS_MULTI_RESULTS | Capabilities.CLIENT_FOUND_ROWS
)


class LoginRefused(Exception):
    """The login fails with this MySQL error (1045 for credentials, others for routing)."""

    def __init__(self, code: int, message: str, sqlstate: str = "28000"):
        super().__init__(message)
        self.code, self.message, self.sqlstate = code, message, sqlstate


class TokenAuth(AuthPlugin):
    """mysql_clear_password, checked by `login(username, token)` (an async callable that
    raises LoginRefused). It needs TLS: the token is a bearer credential."""

    name = "mysql_clear_password"
    client_plugin_name = "mysql_clear_password"

    def __init__(self, login):
        self._login = login

    async def auth(self, auth_info: Optional[AuthInfo] = None) -> AuthState:
        if not auth_info:
            auth_info = yield FILLER
        password = auth_info.data.split(b"\0", 1)[0].decode("utf-8", "replace")
        try:
            await self._login(auth_info.username, password)
        except LoginRefused as exc:
            if exc.code != 1045:
                raise
            yield Forbidden(exc.message)
            return
        yield Success(auth_info.username)


class Identities(IdentityProvider):
    """Every user name is a possible service account: the token decides."""

    def __init__(self, plugin: TokenAuth):
        self.plugin = plugin

    def get_plugins(self):
        return [self.plugin]

    async def get_user(self, username: str) -> Optional[User]:
        return User(name=username, auth_plugin=TokenAuth.name)

    def get_default_plugin(self) -> AuthPlugin:
        return self.plugin


def check_response(body: bytes, offered: int) -> None:
    """Walk a HandshakeResponse41's NUL-terminated strings before mysql-mimic parses it: its
    parser (3.0.5) reads such a string byte by byte until it finds the NUL, forever on a
    truncated packet, which would stall every session of the process. (Its other reads
    stop at the end.) Raises wire.ProtocolError."""
    if len(body) < 32:
        raise wire.ProtocolError("a short handshake response")
    caps = struct.unpack_from("<I", body, 0)[0] & offered
    if len(body) == 32 and caps & Capabilities.CLIENT_SSL:
        return  # an SSLRequest
    pos = _cstring(body, 32)  # the user name
    if caps & Capabilities.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        if pos >= len(body):
            raise wire.ProtocolError("a truncated auth response")
        _, pos = wire.lenenc_str(body, pos)
    elif caps & Capabilities.CLIENT_SECURE_CONNECTION:
        if pos >= len(body) or pos + 1 + body[pos] > len(body):
            raise wire.ProtocolError("a truncated auth response")
        pos += 1 + body[pos]
    else:
        pos = _cstring(body, pos)
    if caps & Capabilities.CLIENT_CONNECT_WITH_DB:
        pos = _cstring(body, pos)
    if caps & Capabilities.CLIENT_PLUGIN_AUTH:
        _cstring(body, pos)


def _cstring(body: bytes, pos: int) -> int:
    end = body.find(b"\0", pos)
    if end < 0:
        raise wire.ProtocolError("a string without its terminating NUL")
    return end + 1
