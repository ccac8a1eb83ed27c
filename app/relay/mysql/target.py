"""The target side: log in with the vault credential (aiomysql), then relay raw packets.

aiomysql, not asyncmy: it is pure Python on top of PyMySQL (which the tests already use),
so after its login the relay can take over its stream and speak packets itself; asyncmy's
Cython connection keeps its stream out of reach. Only the login is aiomysql's: its own
queries after connecting (autocommit, sql_mode, init_command) are all switched off, so
the session starts with the server's defaults, exactly as a direct login would.
"""
from __future__ import annotations

import asyncio
import ssl as ssl_lib
from dataclasses import dataclass

import aiomysql
from pymysql.constants import CLIENT

from . import reader as counted
from . import wire

# What the relay lets a client negotiate and passes on to the target. Not offered:
# LOCAL_FILES (LOAD DATA LOCAL is refused), COMPRESS, SESSION_TRACK, QUERY_ATTRIBUTES,
# DEPRECATE_EOF (one answer format on both legs), IGNORE_SPACE (it changes the lexing).
PASSED = (CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS)


class TargetError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class TargetLink:
    reader: counted.Reader
    writer: asyncio.StreamWriter
    conn: aiomysql.Connection
    thread_id: int

    def close(self) -> None:
        try:
            self.writer.write(wire.frame(bytes((wire.COM_QUIT,)), 0)[0])
            self.writer.close()
        except Exception:  # noqa: BLE001 - already gone
            pass

    async def query(self, sql: str, limit: int) -> list[list[bytes | None]]:
        """Rows of a query the relay asks for itself (text protocol); raises TargetError."""
        self.writer.write(wire.frame(bytes((wire.COM_QUERY,)) + sql.encode(), 0)[0])
        first = await wire.read_payload(self.reader, limit)
        if first[:1] == b"\xff":
            code, _, message = wire.parse_error(first)
            raise TargetError(code, message)
        if first[:1] == b"\x00":
            return []
        n, _ = wire.lenenc_int(first, 0)
        for _ in range(n):
            await wire.read_payload(self.reader, limit)
        await wire.read_payload(self.reader, limit)  # EOF
        rows = []
        while True:
            payload = await wire.read_payload(self.reader, limit)
            if wire.is_eof(payload):
                return rows
            if payload[:1] == b"\xff":
                code, _, message = wire.parse_error(payload)
                raise TargetError(code, message)
            values, pos = [], 0
            for _ in range(n):
                v, pos = wire.lenenc_str(payload, pos)
                values.append(v)
            rows.append(values)


async def connect(address: str, *, database: str | None, username: str, password: str | None,
                  charset: str, client_flags: int, tls_mode: str, timeout: float = 10) -> TargetLink:
    host, _, port = address.rpartition(":")
    if not host:
        host, port = address, "3306"
    context = None
    if tls_mode in ("require", "verify-full"):
        context = ssl_lib.create_default_context()
        if tls_mode == "require":
            context.check_hostname = False
            context.verify_mode = ssl_lib.CERT_NONE
    try:
        conn = await aiomysql.connect(
            host=host.strip("[]"), port=int(port), user=username, password=password or "", db=database,
            charset=charset, client_flag=client_flags & PASSED, autocommit=None, local_infile=False,
            ssl=context, connect_timeout=timeout, program_name="airlock")
    except aiomysql.OperationalError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 2003
        raise TargetError(code, f"the target refused the login: {exc.args[-1]}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise TargetError(2003, f"the target is unreachable ({type(exc).__name__})") from None
    if context is not None and not conn.server_capabilities & CLIENT.SSL:
        conn.close()  # aiomysql would carry on in the clear
        raise TargetError(2026, "the target does not offer TLS, which AIRLOCK_RELAY_TARGET_TLS requires")
    # From here on the relay reads the connection itself, counting what it has not read
    # yet (reader.py: the fast lane must never read an answer behind earlier bytes).
    reader, writer = counted.take_over(conn._writer.transport, 1 << 20)
    return TargetLink(reader, writer, conn, conn.thread_id())
