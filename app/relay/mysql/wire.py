"""MySQL packets on an asyncio stream, and the few payloads the relay reads or builds (pure
apart from the stream reads).

A packet is a 3-byte little-endian length, a sequence number and the payload; a payload
of 16 MiB - 1 bytes or more continues in the next packet. `read_payload` joins them,
`frame` splits them again with the sequence numbers the relay counts itself.
"""
from __future__ import annotations

import asyncio
import struct

MAX_CHUNK = 0xFFFFFF
OK, EOF, ERR, LOCAL_INFILE = 0x00, 0xFE, 0xFF, 0xFB
MORE_RESULTS = 0x0008  # SERVER_MORE_RESULTS_EXISTS
NO_BACKSLASH_ESCAPES = 0x0200  # SERVER_STATUS_NO_BACKSLASH_ESCAPES

COM_QUIT, COM_INIT_DB, COM_QUERY, COM_FIELD_LIST, COM_PING = 0x01, 0x02, 0x03, 0x04, 0x0E
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA = 0x16, 0x17, 0x18
COM_STMT_CLOSE, COM_STMT_RESET, COM_SET_OPTION, COM_STMT_FETCH, COM_RESET_CONNECTION = 0x19, 0x1A, 0x1B, 0x1C, 0x1F


class ProtocolError(Exception):
    """The peer broke the protocol: the connection ends."""


async def read_payload(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One whole payload (continuation packets joined). Sequence numbers are not checked
    here: the relay renumbers everything it sends."""
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            head = await reader.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("the peer closed the connection") from exc
        length = head[0] | head[1] << 8 | head[2] << 16
        size += length
        if size > limit:
            raise ProtocolError(f"a packet of more than {limit} bytes")
        parts.append(await reader.readexactly(length) if length else b"")
        if length < MAX_CHUNK:
            return parts[0] if len(parts) == 1 else b"".join(parts)


def frame(payload: bytes, seq: int) -> tuple[bytes, int]:
    """The packets carrying `payload`, numbered from `seq`; and the next number."""
    if len(payload) < MAX_CHUNK:
        return struct.pack("<I", len(payload) | (seq & 0xFF) << 24) + payload, seq + 1
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos:pos + MAX_CHUNK]
        out += struct.pack("<I", len(chunk) | (seq & 0xFF) << 24) + chunk
        seq += 1
        pos += MAX_CHUNK
        if len(chunk) < MAX_CHUNK:
            return bytes(out), seq


class Framer:
    """Numbers the packets of one exchange (a command and its answer)."""

    def __init__(self, writer: asyncio.StreamWriter, seq: int = 0):
        self.writer, self.seq = writer, seq
        self._out: list[bytes] = []

    def add(self, payload: bytes) -> None:
        data, self.seq = frame(payload, self.seq)
        self._out.append(data)

    async def flush(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
        await self.writer.drain()


# -- length-encoded values ---------------------------------------------------------------


def lenenc_int(data: bytes | memoryview, pos: int) -> tuple[int | None, int]:
    """(value, next position); None is the NULL marker 0xFB."""
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    if first == 0xFC:
        return data[pos + 1] | data[pos + 2] << 8, pos + 3
    if first == 0xFD:
        return data[pos + 1] | data[pos + 2] << 8 | data[pos + 3] << 16, pos + 4
    if first == 0xFE:
        return struct.unpack_from("<Q", data, pos + 1)[0], pos + 9
    raise ProtocolError("bad length-encoded integer")


def lenenc_str(data: bytes | memoryview, pos: int) -> tuple[bytes | None, int]:
    n, pos = lenenc_int(data, pos)
    if n is None:
        return None, pos
    if pos + n > len(data):
        raise ProtocolError("a string runs past its packet")
    return bytes(data[pos:pos + n]), pos + n


def pack_lenenc_int(n: int) -> bytes:
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def pack_lenenc_str(value: bytes | None) -> bytes:
    return b"\xfb" if value is None else pack_lenenc_int(len(value)) + value


# -- OK, EOF and ERR -----------------------------------------------------------------


def is_eof(payload: bytes) -> bool:
    return len(payload) < 9 and payload[:1] == b"\xfe"


def ok_status(payload: bytes) -> tuple[int, int, int]:
    """(affected rows, last insert id, status flags) of an OK packet."""
    affected, pos = lenenc_int(payload, 1)
    last_id, pos = lenenc_int(payload, pos)
    status = struct.unpack_from("<H", payload, pos)[0] if pos + 2 <= len(payload) else 0
    return affected or 0, last_id or 0, status


def eof_status(payload: bytes) -> int:
    return struct.unpack_from("<H", payload, 3)[0] if len(payload) >= 5 else 0


def error(code: int, message: str, sqlstate: str = "HY000") -> bytes:
    return b"\xff" + struct.pack("<H", code) + b"#" + sqlstate.encode()[:5] + message.encode("utf-8", "replace")


def parse_error(payload: bytes) -> tuple[int, str, str]:
    code = struct.unpack_from("<H", payload, 1)[0] if len(payload) >= 3 else 0
    rest = payload[3:]
    state = ""
    if rest[:1] == b"#":
        state, rest = rest[1:6].decode("ascii", "replace"), rest[6:]
    return code, state, rest.decode("utf-8", "replace")


def ok(status: int = 0x0002, affected: int = 0) -> bytes:
    return b"\x00" + pack_lenenc_int(affected) + b"\x00" + struct.pack("<HH", status, 0)
